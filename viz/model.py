"""The monitor's state without Qt: what the operator sees, fed by protocol messages.

:class:`ViewModel` takes ``volume/1``, ``slices/1``, ``metrics/1`` (from the reconstruction
service) and ``start/1``, ``frame/1``, ``end/1`` (from the microscope's viewer socket) through
:meth:`ViewModel.ingest`, from any thread, and answers the questions the widgets ask on their
display timer: which slices to draw (:meth:`~ViewModel.view`), with which levels and colormap, the
latest raw frame, the tilt-angle coverage, the traces and the status line. It is thread-safe; every
method takes a short lock and array work happens outside it.

Coordinates. The crosshair lives on the *reference grid*: the grid of the service's ``slices/1``
(full resolution) when it publishes them, else that of its volumes (which may be downsampled).
Indices are (z, y, x) voxels of that grid; a volume on a coarser grid is cut at the corresponding
voxel. In follow-live mode, with the crosshair where the service cuts its slices and a slab of 1,
the panels show the service's slices (every update, full resolution); anywhere else they are cut
from the newest (or the scrubbed-to) volume of the history.

Two reconstructions. Volumes with ``source="dip"`` (the online DIP's 4-D estimates: a burst of
volumes at times spread over the series so far) are kept apart from the streaming SIRT's history,
in an :class:`~tiltstream.viz.history.EstimateHistory` where each new estimate replaces the older
one over the time span it covers. :meth:`ViewModel.set_source` chooses which one the slices, the
time slider and the exports follow (see :data:`~tiltstream.viz.records.SOURCES`); with ``"dip"``
the slider runs over the time points of the newest estimate and follow-live shows its newest one.
A choice whose reconstruction has no data yet falls back to the other one, so a SIRT-only stream
behaves as before and a monitor started with the DIP chosen switches to it when it arrives.
The reference grid comes from the SIRT (slices, else volumes); DIP volumes, often binned, are cut
at the corresponding voxel like any coarser volume.

The state lives in parts without Qt or locks of their own, one per responsibility: the time slider
over the two reconstructions (:mod:`~tiltstream.viz.timeline`), the cut (:mod:`~tiltstream.viz.cut`),
raw frames and coverage (:mod:`~tiltstream.viz.acquisition`), metrics and traces
(:mod:`~tiltstream.viz.metrics`) and the connection and status line (:mod:`~tiltstream.viz.connection`).
:class:`ViewModel` follows the series, routes each message to its parts, keeps the levels and colormap
of the slice panels itself (they outlive a series) and answers under one lock.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from tiltstream.stream.messages import EndMsg, FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg
from tiltstream.viz.acquisition import AcquisitionState
from tiltstream.viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from tiltstream.viz.connection import ConnectionState
from tiltstream.viz.cut import CutRequest, CutState, compose_view
from tiltstream.viz.history import VolumeEntry
from tiltstream.viz.metrics import MetricsState
from tiltstream.viz.records import CoverageData, FrameView, ModelConfig, Status, ViewData
from tiltstream.viz.slicing import SliceBuffers, percentile_levels
from tiltstream.viz.timeline import Timeline

__all__ = ["ViewModel"]

log = logging.getLogger(__name__)


class ViewModel:
    """State of one monitor; see the module docstring.

    Parameters
    ----------
    config : bounds and thresholds.
    recon_endpoint, frames_endpoint : what the monitor is connected to (shown in the status line).
    clock : monotonic time source in seconds (tests pass a fake).
    """

    def __init__(
        self,
        config: ModelConfig | None = None,
        *,
        recon_endpoint: str | None = None,
        frames_endpoint: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or ModelConfig()
        self.clock = clock
        self._lock = threading.RLock()
        self.timeline = Timeline(self.config)
        self.history = self.timeline.sirt  # the SIRT's volumes
        self.dip = self.timeline.dip  # the DIP's newest estimate
        self.cut = CutState()
        self.levels: tuple[float, float] | None = None  # (low, high) of the slice panels
        self.levels_locked = False  # held across updates, else percentile auto-levels
        self.colormap = DEFAULT_COLORMAP
        self.connection = ConnectionState(self.config, recon_endpoint, frames_endpoint, clock())
        self._buffers = SliceBuffers()
        self._retired: deque[str] = deque(maxlen=64)
        self.series_id: str | None = None
        self.version = 0
        self._reset_series()

    # -- series -----------------------------------------------------------------------------------
    def _reset_series(self, notice: str | None = None, now: float = 0.0) -> None:
        self.timeline.reset()
        self.cut.reset()
        self.acquisition = AcquisitionState(self.config.coverage_points)
        self.metrics_state = MetricsState(self.config.trace_points)
        self.connection.reset(notice, now)

    def _accept_series(self, stream_id: str, now: float) -> bool:
        """Follow ``stream_id``; a new one resets the state. False for messages of retired series."""
        if stream_id == self.series_id:
            return True
        if stream_id in self._retired:
            return False
        if self.series_id is not None:
            self._retired.append(self.series_id)
            log.info("new series %s replaces %s: history cleared", stream_id[:8], self.series_id[:8])
            self._reset_series(f"New series {stream_id[:8]} started; history cleared", now)
        self.series_id = stream_id
        return True

    # -- intake (any thread) ----------------------------------------------------------------------
    def ingest(self, msg: object, received_s: float | None = None) -> bool:
        """Take one protocol message; returns False when it was ignored (retired series, unknown type)."""
        now = self.clock() if received_s is None else float(received_s)
        with self._lock:
            stream_id = getattr(msg, "stream_id", None)
            if stream_id is None or not self._accept_series(stream_id, now):
                return False
            conn = self.connection
            conn.last_any_s = now
            if isinstance(msg, (VolumeMsg, SlicesMsg, MetricsMsg)):
                conn.last_recon_s = now
            if isinstance(msg, VolumeMsg):
                self.timeline.add(VolumeEntry(seq=int(msg.seq), t_s=float(msg.t_s), data=msg.data, source=msg.source,
                                              n_frames_used=int(msg.n_frames_used), voxel_nm=msg.voxel_nm,
                                              received_s=now))
                self.cut.on_volume(msg)
            elif isinstance(msg, SlicesMsg):
                conn.update_gaps.observe(int(msg.seq), now)
                self.timeline.has_live = True
                self.cut.on_slices(msg, now)
            elif isinstance(msg, MetricsMsg):
                if self.metrics_state.on_metrics(msg, now):
                    self.dip.close_estimate()  # an estimate's metrics follow its volumes
                seen = msg.values.get("last_frame_seq")
                if seen is not None and seen >= 0:
                    conn.count_frames(int(seen) + 1, now)
            elif isinstance(msg, FrameMsg):
                conn.frame_gaps.observe(int(msg.seq), now)
                self.acquisition.on_frame(msg, now)
                self.metrics_state.on_frame(msg)
                conn.count_frames(int(msg.seq) + 1, now)
            elif isinstance(msg, StartMsg):
                self.acquisition.on_start(msg)
            elif isinstance(msg, EndMsg):
                conn.ended = msg
            else:
                return False
            self.version += 1
            return True

    def note_rejected(self, total: int) -> None:
        """The receiver's running count of rejected (invalid) messages."""
        with self._lock:
            self.connection.rejected = int(total)

    # -- reconstruction shown and time slider (see viz.timeline) ------------------------------------
    @property
    def source(self) -> str:
        """The reconstruction shown now: ``"sirt"`` or ``"dip"`` (see the module docstring)."""
        with self._lock:
            return self.timeline.source()

    @property
    def dip_available(self) -> bool:
        """True once a DIP volume of this series has arrived (then the reconstruction can be chosen)."""
        return len(self.dip) > 0

    def set_source(self, name: str) -> None:
        """Show the streaming SIRT (``"sirt"``) or the DIP estimate (``"dip"``); when scrubbed back,
        the view stays at the time shown (the chosen reconstruction's closest volume)."""
        with self._lock:
            self.timeline.set_source(name)

    def entries(self) -> list[VolumeEntry]:
        """The volumes the time slider runs over (of the reconstruction shown), oldest time first."""
        with self._lock:
            return list(self.timeline.entries())

    @property
    def follow_live(self) -> bool:
        return self.timeline.follow_live

    def set_follow_live(self, on: bool = True) -> None:
        """Follow the newest data (True), or stay on the volume shown now (False)."""
        with self._lock:
            self.timeline.set_follow_live(on)

    @property
    def n_history(self) -> int:
        """Volumes the time slider runs over (of the reconstruction shown)."""
        with self._lock:
            return len(self.timeline.entries())

    @property
    def index(self) -> int | None:
        """Position on the time slider of the volume shown (the newest when following live)."""
        with self._lock:
            return self.timeline.index()

    def set_index(self, i: int) -> None:
        """Show entry ``i`` (slider move); the newest entry turns follow-live back on."""
        with self._lock:
            self.timeline.set_index(i)

    def history_times(self) -> np.ndarray:
        """(N,) times of the volumes the time slider runs over, seconds since stream start."""
        with self._lock:
            return self.timeline.entries().times()

    # -- crosshair, slab (see viz.cut) --------------------------------------------------------------
    @property
    def reference_shape(self) -> tuple[int, int, int] | None:
        """(Z, Y, X) of the reference grid, None before any data."""
        return self.cut.shape

    @property
    def voxel_nm(self) -> float | None:
        """Voxel edge of the reference grid, nm, when the stream says."""
        return self.cut.voxel_nm

    @property
    def crosshair(self) -> tuple[int, int, int] | None:
        return self.cut.crosshair

    def set_crosshair(self, z: float | None = None, y: float | None = None, x: float | None = None) -> None:
        """Move the crosshair to reference-grid voxel coordinates (floats are floored, then clipped)."""
        with self._lock:
            self.cut.move(z, y, x)

    @property
    def slab(self) -> int:
        return self.cut.slab

    def set_slab(self, planes: int) -> None:
        """Average ``planes`` (≥ 1) neighbouring planes in each panel."""
        with self._lock:
            self.cut.set_slab(planes)

    # -- what to draw -------------------------------------------------------------------------------
    def view(self) -> ViewData | None:
        """The slices to draw now, or None before any data. See the module docstring."""
        with self._lock:
            cut, tl = self.cut, self.timeline
            if cut.shape is None or cut.crosshair is None:
                return None
            source, entries, idx = tl.source(), tl.entries(), tl.index()
            req = CutRequest(shape=cut.shape, crosshair=cut.crosshair, slab=cut.slab,
                             live=cut.live if source == "sirt" else None,
                             entry=entries[idx] if idx is not None else None, source=source,
                             follow_live=tl.follow_live, position=None if idx is None else (idx + 1, len(entries)))
        return compose_view(req, self._buffers)

    def note_displayed(self, view: ViewData | None = None, now: float | None = None) -> None:
        """Record one panel refresh (display fps; end-to-end latency of live data drawn)."""
        now = self.clock() if now is None else now
        with self._lock:
            self.connection.note_displayed(view, self.metrics_state.sirt.get("latency_s"), now)

    # -- levels and colormap ------------------------------------------------------------------------
    def lock_levels(self, locked: bool = True) -> None:
        """Hold the current levels across updates (True) or return to percentile auto-levels."""
        with self._lock:
            self.levels_locked = bool(locked)

    def set_levels(self, low: float, high: float) -> None:
        """Set levels by hand (e.g. dragging the histogram); this locks them."""
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"levels: expected finite low < high, got {low}, {high}")
        with self._lock:
            self.levels, self.levels_locked = (float(low), float(high)), True

    def auto_levels(self, view: ViewData | None) -> tuple[float, float] | None:
        """Update the levels from ``view``'s slices (percentiles) unless locked; return the levels."""
        if view is not None and not self.levels_locked:
            levels = percentile_levels((view.xy, view.xz, view.yz), self.config.low_pct, self.config.high_pct)
            with self._lock:
                if levels is not None and not self.levels_locked:
                    self.levels = levels
        return self.levels

    def set_colormap(self, name: str) -> None:
        if name not in COLORMAPS:
            raise ValueError(f"colormap: expected one of {', '.join(COLORMAPS)}, got {name!r}")
        with self._lock:
            self.colormap = name

    # -- other panels (see viz.acquisition, viz.metrics, viz.connection) -----------------------------
    def latest_frame(self) -> FrameView | None:
        return self.acquisition.frame

    def coverage(self) -> CoverageData:
        """Tilt-angle coverage for the polar plot."""
        with self._lock:
            angles, tilt_range = self.acquisition.coverage_args()
            m = self.metrics_state.sirt
            window, total = m.get("window_frames"), m.get("frames_seen")
        return CoverageData.from_angles(angles, window_frames=window, tilt_range_deg=tilt_range, frames_total=total)

    def traces(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Metric or frame-field name -> (t_s (N,), values (N,)); see :data:`~tiltstream.viz.records.TRACE_LABELS`."""
        with self._lock:
            return self.metrics_state.traces()

    def metrics(self) -> dict[str, float]:
        """The newest ``metrics/1`` values: the SIRT's and the DIP's (``dip_*``) together."""
        with self._lock:
            return {**self.metrics_state.sirt, **self.metrics_state.dip}

    def status(self, now: float | None = None) -> Status:
        """The status line now."""
        now = self.clock() if now is None else now
        with self._lock:
            return self.connection.status(now, self.metrics_state, series_id=self.series_id,
                                          source=self.timeline.source(), dip_available=len(self.dip) > 0)
