"""Operator monitor (pyqtgraph): a Qt-free view model and Qt widgets."""
