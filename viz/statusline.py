"""The monitor window's status line: state, connection, numbers, reconstruction shown, message.

Texts come from :mod:`~tiltstream.viz.texts`; a notice (snapshot saved, export failed) replaces the
model's message for a few seconds.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable

from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from tiltstream.viz import texts
from tiltstream.viz.records import Status
from tiltstream.viz.theme import THEME

__all__ = ["StatusLine"]


class StatusLine:
    """Labels in ``bar`` (a QStatusBar) showing a :class:`~tiltstream.viz.records.Status`.

    Attributes ``state``, ``where``, ``numbers``, ``source`` (hidden for streams without a DIP) and
    ``message`` are the QLabels. ``clock``: monotonic seconds, for how long notices stay.
    """

    def __init__(self, bar: QtWidgets.QStatusBar, *, notice_s: float = 8.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        bar.setStyleSheet(f"QStatusBar {{ background: {THEME['panel']}; color: {THEME['text']}; }}"
                          "QStatusBar::item { border: none; }")
        self.notice_s, self.clock = notice_s, clock
        self._notice: tuple[str, str, float] | None = None
        self.state, self.where, self.numbers, self.source, self.message = (QtWidgets.QLabel() for _ in range(5))
        self.source.setStyleSheet(f"padding-left: 8px; border-left: 1px solid {THEME['old']};")
        self.source.setVisible(False)
        for label in (self.state, self.where, self.numbers, self.source, self.message):
            label.setTextFormat(QtCore.Qt.TextFormat.RichText)
        # state and numbers keep their width; the DIP's progress, the endpoints and the message share
        # what is left (the progress twice as much) and are cut short on a narrow window (whole in their
        # tooltips), rather than drawn over each other
        for label in (self.where, self.source, self.message):
            label.setSizePolicy(QtWidgets.QSizePolicy.Policy.Ignored, QtWidgets.QSizePolicy.Policy.Preferred)
        for label, stretch in ((self.state, 0), (self.where, 1), (self.numbers, 0), (self.source, 2), (self.message, 1)):
            bar.addWidget(label, stretch)

    def show(self, st: Status) -> None:
        """Show ``st`` (and the notice, while it lasts, in place of its message)."""
        for label, text in ((self.state, texts.state_html(st)), (self.numbers, texts.numbers_html(st))):
            label.setText(text)
            label.setMinimumWidth(label.sizeHint().width())
        source = texts.source_html(st)
        self._fit(self.where, texts.where_html(st))
        self._fit(self.source, source or "")
        self.source.setVisible(source is not None)
        message, level = st.message, st.level
        if self._notice is not None and self.clock() < self._notice[2]:
            message, level = self._notice[0], self._notice[1]
        self._fit(self.message, texts.message_html(message, level), lambda cut: texts.message_html(cut, level))

    @staticmethod
    def _fit(label: QtWidgets.QLabel, rich: str, restyle: Callable[[str], str] = html.escape) -> None:
        """``rich`` in ``label``, whole in its tooltip; where the label is too narrow, its plain text cut
        short with "…" (in ``restyle``) instead of letters clipped at the edge."""
        doc = QtGui.QTextDocument()
        doc.setDocumentMargin(0)
        doc.setDefaultFont(label.font())
        doc.setHtml(rich)
        plain, width = doc.toPlainText(), label.contentsRect().width()
        if doc.idealWidth() > width:
            rich = restyle(label.fontMetrics().elidedText(plain, QtCore.Qt.TextElideMode.ElideRight, width))
        label.setText(rich)
        label.setToolTip(plain)

    def notice(self, text: str, level: str = "info") -> None:
        """Show ``text`` for ``notice_s`` seconds in place of the model's message (from the next :meth:`show`)."""
        self._notice = (text, level, self.clock() + self.notice_s)
