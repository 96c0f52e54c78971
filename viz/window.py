"""The monitor's main window: panels, controls and the display timer.

A :class:`QTimer` at a fixed display rate pulls from the :class:`~tiltstream.viz.model.ViewModel`
(filled by a :class:`~tiltstream.viz.receiver.StreamReceiver` thread) and redraws only what changed:
slices when the data or the cut changed, the raw frame when a new one came, the slower panels
(coverage, traces, histogram, status) a few times a second. Images are drawn with
``setImage(..., autoLevels=False)``; levels come from the model (percentiles, or locked).

When the stream carries DIP estimates, a "SIRT live | DIP" selector appears left of the time
slider: the slices, the slider, the snapshot and the movie export follow the reconstruction chosen,
and the status line says which one is shown and how far the DIP has got.

The window lays out the panels, the :class:`~tiltstream.viz.controls.ControlBar` and the
:class:`~tiltstream.viz.statusline.StatusLine`, turns control changes into model calls and runs the
display timer; what the labels say is in :mod:`~tiltstream.viz.texts`.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from pathlib import Path

from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from tiltstream.viz import _qtfix
from tiltstream.viz.controls import ControlBar
from tiltstream.viz.export import history_frames, write_movie
from tiltstream.viz.model import ViewModel
from tiltstream.viz.records import ViewData
from tiltstream.viz.statusline import StatusLine
from tiltstream.viz.theme import THEME
from tiltstream.viz.widgets import CoveragePanel, FramePanel, OrthoPanel, TracesPanel

__all__ = ["MonitorWindow", "apply_dark_theme"]

log = logging.getLogger(__name__)


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Fusion style with a dark palette (images read best on dark surroundings)."""
    app.setStyle("Fusion")
    pal = QtGui.QPalette()
    c = QtGui.QColor
    roles = QtGui.QPalette.ColorRole
    for role, color in (
        (roles.Window, c(THEME["background"])), (roles.WindowText, c(THEME["text"])),
        (roles.Base, c("#0f1113")), (roles.AlternateBase, c(THEME["panel"])),
        (roles.Text, c(THEME["text"])), (roles.Button, c("#262a30")), (roles.ButtonText, c(THEME["text"])),
        (roles.Highlight, c("#2f6fb0")), (roles.HighlightedText, c("#ffffff")),
        (roles.ToolTipBase, c(THEME["panel"])), (roles.ToolTipText, c(THEME["text"])),
        (roles.PlaceholderText, c(THEME["dim"])),
    ):
        pal.setColor(role, color)
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, roles.ButtonText, c("#5c636d"))
    pal.setColor(QtGui.QPalette.ColorGroup.Disabled, roles.Text, c("#5c636d"))
    app.setPalette(pal)


class MonitorWindow(QtWidgets.QMainWindow):
    """The operator monitor for one :class:`ViewModel`.

    Parameters
    ----------
    model : the state to show.
    display_hz : panel refresh rate, independent of the data rate.
    slow_hz : refresh rate of the histogram, coverage, traces and status line.
    out_dir : where snapshots and movies go.

    Attributes
    ----------
    controls, status_line : the control bar and the status line.
    shown_view : the :class:`ViewData` the slice panels show now (None before any).
    """

    def __init__(
        self,
        model: ViewModel,
        *,
        display_hz: float = 20.0,
        slow_hz: float = 2.0,
        out_dir: str | Path = ".",
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        if not display_hz > 0 or not slow_hz > 0:
            raise ValueError(f"display_hz, slow_hz: expected > 0, got {display_hz}, {slow_hz}")
        self.model = model
        self.out_dir = Path(out_dir)
        self.slow_period_s = 1.0 / slow_hz
        self.setWindowTitle("tiltstream monitor")
        self.ortho = OrthoPanel()
        self.frame = FramePanel()
        self.coverage = CoveragePanel()
        self.traces = TracesPanel()
        self.controls = ControlBar(model.source, model.slab, model.colormap)
        self.status_line = StatusLine(self.statusBar())
        self._build()
        self._connect()
        self._last_key: tuple | None = None
        self.shown_view: ViewData | None = None
        self._last_frame_seq: int | None = None
        self._last_slow = -math.inf
        self._levels_applied: tuple[float, float] | None = None
        self._series: str | None = None
        self.ortho.set_colormap(model.colormap)
        self.timer = QtCore.QTimer(self)
        self.timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self.timer.timeout.connect(self.refresh)
        self.timer.start(max(1, int(round(1000.0 / display_hz))))

    # -- layout ------------------------------------------------------------------------------------
    def _build(self) -> None:
        central = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(central)
        outer.setContentsMargins(6, 6, 6, 2)
        outer.setSpacing(6)
        outer.addWidget(self.controls)
        right = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        right.addWidget(self.frame)
        right.addWidget(self.coverage)
        right.setSizes([520, 420])
        top = QtWidgets.QSplitter(QtCore.Qt.Orientation.Horizontal)
        top.addWidget(self.ortho)
        top.addWidget(right)
        top.setStretchFactor(0, 3)
        top.setStretchFactor(1, 2)
        top.setSizes([1000, 560])
        self._top_splitter = top
        self._fitted: tuple | None = None
        main = QtWidgets.QSplitter(QtCore.Qt.Orientation.Vertical)
        main.addWidget(top)
        main.addWidget(self.traces)
        main.setStretchFactor(0, 4)
        main.setStretchFactor(1, 1)
        main.setSizes([760, 210])
        outer.addWidget(main, 1)
        self.setCentralWidget(central)

    def _connect(self) -> None:
        """Control changes -> model calls (and a redraw where the view changes)."""
        c, m = self.controls, self.model

        def redraw(fn):  # noqa: ANN001, ANN202
            return lambda *args: (fn(*args), self.refresh(force=True))

        c.source_box.sourceChosen.connect(redraw(lambda name: (m.set_source(name), self._sync_source())))
        c.live_button.toggled.connect(redraw(m.set_follow_live))
        c.slider.valueChanged.connect(redraw(lambda i: (m.set_index(i), c.set_live(m.follow_live))))
        c.slab.valueChanged.connect(redraw(m.set_slab))
        c.cmap.currentTextChanged.connect(lambda name: (m.set_colormap(name), self.ortho.set_colormap(name)))
        c.lock.toggled.connect(lambda on: (m.lock_levels(on), None if on else self.refresh(force=True)))
        c.snap_button.clicked.connect(lambda: self.save_snapshot())
        c.exportRequested.connect(lambda fmt: self.export_history(fmt=fmt))
        self.ortho.crosshairMoved.connect(redraw(lambda move: m.set_crosshair(*move)))
        self.ortho.levelsEdited.connect(self._on_levels_edited)

    def _on_levels_edited(self, levels: tuple[float, float]) -> None:
        self.model.set_levels(*levels)
        self._levels_applied = self.model.levels
        self.controls.set_locked(True)

    def _sync_source(self) -> None:
        self.controls.source_box.set_state(self.model.dip_available, self.model.source)

    # -- drawing ------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """One display tick: redraw what changed since the last one."""
        _qtfix.top_up()
        model = self.model
        if model.series_id != self._series:
            self._series = model.series_id
            self.traces.reset()
            self._last_frame_seq = None
        view = model.view()
        if view is not None:
            shape = model.reference_shape
            if shape is not None:
                self.ortho.set_geometry(shape, model.voxel_nm)
                self._fit_splitter(shape)
            if force or view.key != self._last_key:
                levels = model.auto_levels(view)
                self.ortho.set_view(view, levels)
                self._levels_applied = levels
                self._last_key = view.key
                self.shown_view = view
            elif model.levels != self._levels_applied:
                self.ortho.set_levels(model.levels)
                self._levels_applied = model.levels
        frame = model.latest_frame()
        if frame is not None and frame.seq != self._last_frame_seq:
            self.frame.set_frame(frame)
            self._last_frame_seq = frame.seq
        model.note_displayed(view)
        now = time.monotonic()
        if force or now - self._last_slow >= self.slow_period_s:
            self._last_slow = now
            self._slow_refresh(view)

    def _fit_splitter(self, shape: tuple[int, int, int]) -> None:
        """Give the slices the width their height calls for, and the rest to the frame and coverage."""
        key = (shape, self.width(), self.height())
        if key == self._fitted:
            return
        self._fitted = key
        pref = self.ortho.preferred_width()
        total = sum(self._top_splitter.sizes())
        if pref and total > 0:
            right = max(380, total - pref)
            self._top_splitter.setSizes([total - right, right])

    def _slow_refresh(self, view: ViewData | None) -> None:
        model = self.model
        if view is not None:
            self.ortho.update_histogram(view, model.levels)
        self.coverage.set_coverage(model.coverage())
        self.traces.set_traces(model.traces())
        # the marker says which time the slices show: when scrubbed back, and always for the DIP
        # (its newest time point trails the newest frame)
        marked = view is not None and (not model.follow_live or view.source == "dip")
        self.traces.set_marker(view.t_s if marked else None)
        self._sync_source()
        self.controls.set_slider(model.history_times(), model.index, model.source == "dip")
        self.controls.set_live(model.follow_live)
        self.status_line.show(model.status())

    # -- output -------------------------------------------------------------------------------------
    def _out_path(self, stem: str, suffix: str) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return self.out_dir / f"{stem}-{datetime.now():%Y%m%d-%H%M%S}{suffix}"

    def save_snapshot(self, path: str | Path | None = None) -> Path:
        """Save the whole window as PNG (default: a time-stamped name in ``out_dir``)."""
        self.refresh(force=True)
        path = Path(path) if path is not None else self._out_path("tiltstream-snapshot", ".png")
        if not self.grab().save(str(path)):
            raise OSError(f"could not write snapshot {path}")
        self._say(f"Snapshot saved: {path}")
        return path

    def export_history(self, path: str | Path | None = None, *, fmt: str = "gif", fps: float = 4.0) -> Path:
        """Write the slice history (every volume in the ring buffer, cut at the crosshair) as a movie."""
        model = self.model
        entries = model.entries()  # of the reconstruction shown
        if model.reference_shape is None or model.crosshair is None or not entries:
            self._say("Nothing to export yet: no volume received", level="warn")
            raise ValueError("history is empty: no volumes to export yet")
        stem = "tiltstream-dip-slices" if model.source == "dip" else "tiltstream-slices"
        path = Path(path) if path is not None else self._out_path(stem, f".{fmt}")
        levels = model.levels if model.levels_locked else None
        frames = history_frames(entries, model.crosshair, model.reference_shape, slab=model.slab, levels=levels,
                                colormap=model.colormap)
        try:
            write_movie(frames, path, fps=fps)
        except (RuntimeError, OSError, ValueError) as exc:
            self._say(f"Export failed: {exc}", level="error")
            raise
        self._say(f"Exported {len(frames)} volumes to {path}")
        return path

    def _say(self, text: str, level: str = "info") -> None:
        """Show ``text`` on the status line for a few seconds (in place of the model's message)."""
        log.info("%s", text)
        self.status_line.notice(text, level)
        self.status_line.show(self.model.status())

    def panel_image(self, name: str) -> QtGui.QImage:
        """The pixels of one panel's image area as drawn (``"xy"``, ``"xz"``, ``"yz"`` or ``"frame"``)."""
        self.refresh(force=True)
        if name == "frame":
            widget, rect = self.frame, self.frame.panel_rect()
        else:
            widget, rect = self.ortho, self.ortho.panel_rect(name)
        return widget.grab(rect).toImage()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802 (Qt name)
        self.timer.stop()
        super().closeEvent(event)
