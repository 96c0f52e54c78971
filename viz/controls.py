"""The monitor window's control bar: reconstruction selector, follow-live, time slider, slab,
colormap, lock levels, snapshot and movie export. It only draws and emits; the window acts."""

from __future__ import annotations

from collections.abc import Sequence

from pyqtgraph.Qt import QtCore, QtWidgets

from tiltstream.viz import texts
from tiltstream.viz.colormaps import COLORMAPS
from tiltstream.viz.export import movie_formats
from tiltstream.viz.theme import THEME
from tiltstream.viz.widgets import SourceSelector

__all__ = ["ControlBar", "separator"]


def separator() -> QtWidgets.QFrame:
    line = QtWidgets.QFrame()
    line.setFrameShape(QtWidgets.QFrame.Shape.VLine)
    line.setStyleSheet(f"color: {THEME['old']};")
    return line


class ControlBar(QtWidgets.QFrame):
    """The controls; ``exportRequested(fmt)`` when a movie format is chosen from the export menu."""

    exportRequested = QtCore.Signal(str)

    def __init__(self, source: str, slab: int, colormap: str, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.setStyleSheet(f"QFrame {{ background: {THEME['panel']}; border-radius: 4px; }}"
                           f"QLabel, QCheckBox {{ color: {THEME['text']}; }}"
                           "QToolButton::menu-indicator { image: none; width: 0px; }"
                           "QToolButton, QPushButton { padding: 3px 10px; }")
        row = QtWidgets.QHBoxLayout(self)
        row.setContentsMargins(8, 4, 8, 4)
        row.setSpacing(8)
        self.source_box = SourceSelector(source)
        self.live_button = QtWidgets.QPushButton("● LIVE")
        self.live_button.setCheckable(True)
        self.live_button.setChecked(True)
        self.live_button.setToolTip("Follow the newest reconstruction (uncheck or move the slider to scrub back)")
        self.live_button.setMinimumWidth(78)
        self.live_button.toggled.connect(self.style_live)
        self.style_live(True)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip(texts.slider_text([], None, False)[1])
        self.slider.setStyleSheet(
            "QSlider::groove:horizontal { height: 4px; background: #3a3f47; border-radius: 2px; }"
            "QSlider::sub-page:horizontal { background: #2f6fb0; border-radius: 2px; }"
            f"QSlider::handle:horizontal {{ background: {THEME['text']}; width: 12px; margin: -5px 0;"
            " border-radius: 6px; }")
        self.time_label = QtWidgets.QLabel("no volume yet")
        self.time_label.setMinimumWidth(190)
        self.slab = QtWidgets.QSpinBox()
        self.slab.setRange(1, 63)
        self.slab.setSingleStep(2)
        self.slab.setValue(slab)
        self.slab.setSuffix(" pl.")
        self.slab.setToolTip("Slab thickness: planes averaged around the crosshair in each panel")
        self.cmap = QtWidgets.QComboBox()
        self.cmap.addItems(list(COLORMAPS))
        self.cmap.setCurrentText(colormap)
        self.lock = QtWidgets.QCheckBox("Lock levels")
        self.lock.setToolTip("Hold the contrast across updates (off: percentile auto-levels, 0.5–99.5 %)")
        self.snap_button = QtWidgets.QPushButton("Snapshot")
        self.snap_button.setToolTip("Save the window as PNG in the output folder")
        self.export_button = QtWidgets.QToolButton()
        self.export_button.setText("Export movie ▾")
        self.export_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QtWidgets.QMenu(self.export_button)
        formats = movie_formats()
        for fmt in ("gif", "mp4"):
            act = menu.addAction(f"Slice history as {fmt.upper()}")
            act.triggered.connect(lambda _=False, f=fmt: self.exportRequested.emit(f))
            act.setEnabled(fmt in formats)
            if fmt not in formats:
                act.setToolTip("needs imageio-ffmpeg or ffmpeg" if fmt == "mp4" else "needs Pillow")
        self.export_button.setMenu(menu)
        for w in (self.source_box, self.live_button):
            row.addWidget(w)
        row.addWidget(self.slider, 1)
        for w in (self.time_label, separator(), QtWidgets.QLabel("Slab"), self.slab, QtWidgets.QLabel("Colormap"),
                  self.cmap, self.lock, separator(), self.snap_button, self.export_button):
            row.addWidget(w)

    def style_live(self, live: bool) -> None:
        color = THEME["error"] if live else THEME["dim"]
        self.live_button.setStyleSheet(f"QPushButton {{ color: {color}; font-weight: 600; padding: 3px 8px; }}")
        self.live_button.setText("● LIVE" if live else "○ LIVE")

    def set_live(self, live: bool) -> None:
        """Show follow-live as ``live`` without emitting ``toggled``."""
        if self.live_button.isChecked() != live:
            with QtCore.QSignalBlocker(self.live_button):
                self.live_button.setChecked(live)
            self.style_live(live)

    def set_locked(self, locked: bool) -> None:
        """Tick "Lock levels" without emitting ``toggled``."""
        with QtCore.QSignalBlocker(self.lock):
            self.lock.setChecked(locked)

    def set_slider(self, times: Sequence[float], index: int | None, dip: bool) -> None:
        """The slider over volumes at ``times`` (s) at ``index``, without emitting ``valueChanged``."""
        with QtCore.QSignalBlocker(self.slider):
            self.slider.setRange(0, max(0, len(times) - 1))
            if index is not None:
                self.slider.setValue(index)
        label, tip = texts.slider_text(times, index, dip)
        self.time_label.setText(label)
        self.slider.setToolTip(tip)
