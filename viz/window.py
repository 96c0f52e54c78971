"""The monitor's main window: panels, controls and the display timer.

A :class:`QTimer` at a fixed display rate pulls from the :class:`~tiltstream.viz.model.ViewModel`
(filled by a :class:`~tiltstream.viz.receiver.StreamReceiver` thread) and redraws only what changed:
slices when the data or the cut changed, the raw frame when a new one came, the slower panels
(coverage, traces, histogram, status) a few times a second. Images are drawn with
``setImage(..., autoLevels=False)``; levels come from the model (percentiles, or locked).

When the stream carries DIP estimates, a "SIRT live | DIP" selector appears left of the time
slider: the slices, the slider, the snapshot and the movie export follow the reconstruction chosen,
and the status line says which one is shown and how far the DIP has got.
"""

from __future__ import annotations

import logging
import math
import time
from datetime import datetime
from pathlib import Path

from pyqtgraph.Qt import QtCore, QtGui, QtWidgets

from tiltstream.viz import _qtfix
from tiltstream.viz.colormaps import COLORMAPS
from tiltstream.viz.export import history_frames, movie_formats, write_movie
from tiltstream.viz.model import Status, ViewData, ViewModel
from tiltstream.viz.widgets import THEME, CoveragePanel, FramePanel, OrthoPanel, SourceSelector, TracesPanel

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
        self._build()
        self._last_key: tuple | None = None
        self._last_view: ViewData | None = None
        self._last_frame_seq: int | None = None
        self._last_slow = -math.inf
        self._levels_applied: tuple[float, float] | None = None
        self._series: str | None = None
        self._notice: tuple[str, str, float] | None = None
        self.refresh_s: list[float] = []
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
        outer.addWidget(self._controls())
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
        self._status_bar()
        self.ortho.crosshairMoved.connect(self._on_crosshair)
        self.ortho.levelsEdited.connect(self._on_levels_edited)

    def _controls(self) -> QtWidgets.QWidget:
        bar = QtWidgets.QFrame()
        bar.setStyleSheet(f"QFrame {{ background: {THEME['panel']}; border-radius: 4px; }}"
                          f"QLabel, QCheckBox {{ color: {THEME['text']}; }}"
                          "QToolButton::menu-indicator { image: none; width: 0px; }"
                          "QToolButton, QPushButton { padding: 3px 10px; }")
        row = QtWidgets.QHBoxLayout(bar)
        row.setContentsMargins(8, 4, 8, 4)
        row.setSpacing(8)
        self.source_box = SourceSelector(self.model.source)
        self.source_box.sourceChosen.connect(self._on_source)
        self.source_buttons = self.source_box.buttons
        self.live_button = QtWidgets.QPushButton("● LIVE")
        self.live_button.setCheckable(True)
        self.live_button.setChecked(True)
        self.live_button.setToolTip("Follow the newest reconstruction (uncheck or move the slider to scrub back)")
        self.live_button.setMinimumWidth(78)
        self.live_button.toggled.connect(self._on_live)
        self._style_live(True)
        self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal)
        self.slider.setRange(0, 0)
        self.slider.setToolTip("History of published volumes (ring buffer); drag to scrub back")
        self.slider.setStyleSheet(
            "QSlider::groove:horizontal { height: 4px; background: #3a3f47; border-radius: 2px; }"
            "QSlider::sub-page:horizontal { background: #2f6fb0; border-radius: 2px; }"
            f"QSlider::handle:horizontal {{ background: {THEME['text']}; width: 12px; margin: -5px 0;"
            " border-radius: 6px; }")
        self.slider.valueChanged.connect(self._on_slider)
        self.time_label = QtWidgets.QLabel("no volume yet")
        self.time_label.setMinimumWidth(190)
        self.slab = QtWidgets.QSpinBox()
        self.slab.setRange(1, 63)
        self.slab.setSingleStep(2)
        self.slab.setValue(self.model.slab)
        self.slab.setSuffix(" pl.")
        self.slab.setToolTip("Slab thickness: planes averaged around the crosshair in each panel")
        self.slab.valueChanged.connect(self._on_slab)
        self.cmap = QtWidgets.QComboBox()
        self.cmap.addItems(list(COLORMAPS))
        self.cmap.setCurrentText(self.model.colormap)
        self.cmap.currentTextChanged.connect(self._on_cmap)
        self.lock = QtWidgets.QCheckBox("Lock levels")
        self.lock.setToolTip("Hold the contrast across updates (off: percentile auto-levels, 0.5–99.5 %)")
        self.lock.toggled.connect(self._on_lock)
        self.snap_button = QtWidgets.QPushButton("Snapshot")
        self.snap_button.setToolTip("Save the window as PNG in the output folder")
        self.snap_button.clicked.connect(lambda: self.save_snapshot())
        self.export_button = QtWidgets.QToolButton()
        self.export_button.setText("Export movie ▾")
        self.export_button.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QtWidgets.QMenu(self.export_button)
        formats = movie_formats()
        for fmt in ("gif", "mp4"):
            act = menu.addAction(f"Slice history as {fmt.upper()}")
            act.triggered.connect(lambda _=False, f=fmt: self.export_history(fmt=f))
            act.setEnabled(fmt in formats)
            if fmt not in formats:
                act.setToolTip("needs imageio-ffmpeg or ffmpeg" if fmt == "mp4" else "needs Pillow")
        self.export_button.setMenu(menu)
        for w in (self.source_box, self.live_button):
            row.addWidget(w)
        row.addWidget(self.slider, 1)
        row.addWidget(self.time_label)
        row.addWidget(_separator())
        row.addWidget(QtWidgets.QLabel("Slab"))
        row.addWidget(self.slab)
        row.addWidget(QtWidgets.QLabel("Colormap"))
        row.addWidget(self.cmap)
        row.addWidget(self.lock)
        row.addWidget(_separator())
        row.addWidget(self.snap_button)
        row.addWidget(self.export_button)
        return bar

    def _status_bar(self) -> None:
        sb = self.statusBar()
        sb.setStyleSheet(f"QStatusBar {{ background: {THEME['panel']}; color: {THEME['text']}; }}"
                         "QStatusBar::item { border: none; }")
        self.status_state = QtWidgets.QLabel()
        self.status_where = QtWidgets.QLabel()
        self.status_numbers = QtWidgets.QLabel()
        self.status_source = QtWidgets.QLabel()
        self.status_source.setStyleSheet(f"padding-left: 8px; border-left: 1px solid {THEME['old']};")
        self.status_source.setVisible(False)
        self.status_message = QtWidgets.QLabel()
        for w in (self.status_state, self.status_where, self.status_numbers, self.status_source):
            w.setTextFormat(QtCore.Qt.TextFormat.RichText)
        self.status_message.setTextFormat(QtCore.Qt.TextFormat.RichText)
        sb.addWidget(self.status_state)
        sb.addWidget(self.status_where)
        sb.addWidget(self.status_numbers)
        sb.addWidget(self.status_source)
        sb.addWidget(self.status_message, 1)

    def _style_live(self, live: bool) -> None:
        color = THEME["error"] if live else THEME["dim"]
        self.live_button.setStyleSheet(
            f"QPushButton {{ color: {color}; font-weight: 600; padding: 3px 8px; }}")
        self.live_button.setText("● LIVE" if live else "○ LIVE")

    # -- control handlers ---------------------------------------------------------------------------
    def _on_source(self, name: str) -> None:
        self.model.set_source(name)
        self._sync_source()
        self.refresh(force=True)

    def _sync_source(self) -> None:
        self.source_box.set_state(self.model.dip_available, self.model.source)

    def _on_live(self, on: bool) -> None:
        self.model.set_follow_live(on)
        self._style_live(on)
        self.refresh(force=True)

    def _on_slider(self, value: int) -> None:
        if self._updating_slider:
            return
        self.model.set_index(value)
        self._sync_live_button()
        self.refresh(force=True)

    _updating_slider = False

    def _sync_live_button(self) -> None:
        live = self.model.follow_live
        if self.live_button.isChecked() != live:
            self.live_button.blockSignals(True)
            self.live_button.setChecked(live)
            self.live_button.blockSignals(False)
            self._style_live(live)

    def _on_slab(self, value: int) -> None:
        self.model.set_slab(value)
        self.refresh(force=True)

    def _on_cmap(self, name: str) -> None:
        self.model.set_colormap(name)
        self.ortho.set_colormap(name)

    def _on_lock(self, on: bool) -> None:
        self.model.lock_levels(on)
        if not on:
            self.refresh(force=True)

    def _on_levels_edited(self, levels: tuple[float, float]) -> None:
        self.model.set_levels(*levels)
        self._levels_applied = self.model.levels
        self.lock.blockSignals(True)
        self.lock.setChecked(True)
        self.lock.blockSignals(False)

    def _on_crosshair(self, move: tuple) -> None:
        self.model.set_crosshair(*move)
        self.refresh(force=True)

    # -- drawing ------------------------------------------------------------------------------------
    def refresh(self, force: bool = False) -> None:
        """One display tick: redraw what changed since the last one."""
        _qtfix.top_up()
        t0 = time.perf_counter()
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
                self._last_view = view
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
        if view is not None:
            self.refresh_s.append(time.perf_counter() - t0)
            del self.refresh_s[:-200]

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
        self._update_slider()
        self.show_status(model.status())

    def _update_slider(self) -> None:
        n = self.model.n_history
        idx = self.model.index
        self._updating_slider = True
        try:
            self.slider.setRange(0, max(0, n - 1))
            if idx is not None:
                self.slider.setValue(idx)
        finally:
            self._updating_slider = False
        self._sync_live_button()
        if idx is None:
            self.time_label.setText("no volume yet")
            return
        times = self.model.history_times()
        t = times[idx] if idx < len(times) else float("nan")
        span = f"{times[0]:.0f}–{times[-1]:.0f} s" if len(times) else ""
        dip = self.model.source == "dip"
        prefix = "DIP " if dip else ""
        self.time_label.setText(f"{prefix}t = {t:.1f} s  ({idx + 1}/{n}, {span})")
        self.slider.setToolTip("Time points of the newest DIP estimate; drag to scrub" if dip else
                               "History of published volumes (ring buffer); drag to scrub back")

    def show_status(self, st: Status) -> None:
        dot = {"live": THEME["ok"], "waiting": THEME["warn"], "stalled": THEME["warn"],
               "silent": THEME["error"], "ended": THEME["info"]}.get(st.state, THEME["dim"])
        self.status_state.setText(f"<span style='color:{dot}'>●</span> <b>{st.state.upper()}</b>")
        where = [f"recon <b>{st.recon_endpoint}</b>"] if st.recon_endpoint else []
        if st.frames_endpoint:
            where.append(f"frames <b>{st.frames_endpoint}</b>")
        if st.series_id:
            where.append(f"series <b>{st.series_id[:8]}</b>")
        self.status_where.setText(" &nbsp;·&nbsp; ".join(where))

        def fmt(v: float | None, spec: str, unit: str) -> str:
            return "–" if v is None else f"{format(v, spec)}{unit}"

        lat = None if st.end_to_end_s is None else 1e3 * st.end_to_end_s
        drop_color = THEME["warn"] if st.frames_dropped else THEME["text"]
        numbers = [
            f"in <b>{fmt(st.frames_per_s, '.1f', '')}</b> frames/s",
            f"display <b>{fmt(st.display_fps, '.0f', '')}</b> fps",
            f"latency <b>{fmt(lat, '.0f', ' ms')}</b>",
            f"<span style='color:{drop_color}'>dropped <b>{st.frames_dropped}</b> frames</span>"
            + (f"<span style='color:{THEME['dim']}'> ({st.updates_dropped} updates skipped)</span>"
               if st.updates_dropped else ""),
        ]
        if st.rejected:
            numbers.append(f"<span style='color:{THEME['warn']}'>rejected {st.rejected}</span>")
        if st.service_rejects:
            numbers.append(f"<span style='color:{THEME['warn']}'>{st.service_rejected()}</span>")
        self.status_numbers.setText(" &nbsp;·&nbsp; ".join(numbers))
        for label in (self.status_state, self.status_where, self.status_numbers):
            label.setMinimumWidth(label.sizeHint().width())
        self._show_source_status(st)
        message, level = st.message, st.level
        if self._notice is not None and time.monotonic() < self._notice[2]:
            message, level = self._notice[0], self._notice[1]
        color = THEME.get(level, THEME["text"])
        self.status_message.setText(f"<span style='color:{color}'>{message}</span>" if message else "")

    def _show_source_status(self, st: Status) -> None:
        """Which reconstruction is shown, and the DIP's progress (only for streams that carry a DIP)."""
        if not (st.dip_available or st.dip_frames is not None):
            self.status_source.setVisible(False)
            return
        name = SourceSelector.LABELS.get(st.source, st.source)
        parts = [f"showing <b style='color:{THEME.get(st.source, THEME['text'])}'>{name}</b>"]
        if st.dip_frames is not None:
            dip = f"DIP <b>{st.dip_frames}</b> frames fitted"
            if st.dip_heldout_nrmse is not None:
                dip += f", held-out NRMSE <b>{st.dip_heldout_nrmse:.3f}</b>"
            if st.dip_age_s is not None:
                dip += f" <span style='color:{THEME['dim']}'>({st.dip_age_s:.0f} s ago)</span>"
            parts.append(dip)
        self.status_source.setText(" &nbsp;·&nbsp; ".join(parts))
        self.status_source.setMinimumWidth(self.status_source.sizeHint().width())
        self.status_source.setVisible(True)

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
        self._notice = (text, level, time.monotonic() + 8.0)
        self.show_status(self.model.status())

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


def _separator() -> QtWidgets.QFrame:
    line = QtWidgets.QFrame()
    line.setFrameShape(QtWidgets.QFrame.Shape.VLine)
    line.setStyleSheet(f"color: {THEME['old']};")
    return line
