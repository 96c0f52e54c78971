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
from tiltstream.viz.colormaps import COLORMAPS, DEFAULT_COLORMAP
from tiltstream.viz.history import Trace, VolumeEntry
from tiltstream.viz.records import (
    SOURCES,
    TRACE_LABELS,
    CoverageData,
    FrameView,
    ModelConfig,
    RateMeter,
    SeqGaps,
    Status,
    ViewData,
    trace_group,
)
from tiltstream.viz.slicing import SliceBuffers, cut_slices, percentile_levels
from tiltstream.viz.timeline import Timeline

__all__ = ["ModelConfig", "ViewModel", "ViewData", "FrameView", "CoverageData", "Status", "TRACE_LABELS",
           "SOURCES"]

#: Reference-grid priority: the service's full-resolution slices, else its SIRT volumes, else DIP volumes.
_REF_SLICES, _REF_VOLUME, _REF_DIP = 2, 1, 0

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
        self.recon_endpoint = recon_endpoint
        self.frames_endpoint = frames_endpoint
        self.clock = clock
        self._lock = threading.RLock()
        self.timeline = Timeline(self.config)
        self.history = self.timeline.sirt  # the SIRT's volumes
        self.dip = self.timeline.dip  # the DIP's newest estimate
        self._buffers = SliceBuffers()
        self._started_s = clock()
        self._crosshair: tuple[int, int, int] | None = None
        self._slab = 1
        self._levels: tuple[float, float] | None = None
        self._levels_locked = False
        self._colormap = DEFAULT_COLORMAP
        self._display = RateMeter(2.0)
        self._n_displayed = 0
        self._rejected = 0
        self._retired: deque[str] = deque(maxlen=64)
        self.series_id: str | None = None
        self.version = 0
        self._reset_series()

    # -- series -----------------------------------------------------------------------------------
    def _reset_series(self) -> None:
        self.timeline.reset()
        self._dip_metrics: dict[str, float] = {}
        self._last_dip_s: float | None = None
        self._ref_rank = -1
        self._slices: tuple[SlicesMsg, float] | None = None
        self._frame: FrameView | None = None
        self._ref_shape: tuple[int, int, int] | None = None
        self._ref_voxel_nm: float | None = None
        self._crosshair = None
        self._crosshair_moved = False
        self._angles: deque[float] = deque(maxlen=self.config.coverage_points)
        self._tilt_range: tuple[float, float] | None = None
        self._traces: dict[str, Trace] = {}
        self._metrics: dict[str, float] = {}
        self._frame_gaps = SeqGaps()
        self._update_gaps = SeqGaps()
        self._frames_count = 0
        self._progress = RateMeter(self.config.rate_window_s)
        self._last_progress_s: float | None = None
        self._last_recon_s: float | None = None
        self._last_any_s: float | None = None
        self._ended: EndMsg | None = None
        self._e2e_s: float | None = None
        self._e2e_key: tuple | None = None  # the view whose latency _e2e_s is
        self._notice: tuple[str, float] | None = None

    def _accept_series(self, stream_id: str, now: float) -> bool:
        """Follow ``stream_id``; a new one resets the state. False for messages of retired series."""
        if stream_id == self.series_id:
            return True
        if stream_id in self._retired:
            return False
        if self.series_id is not None:
            self._retired.append(self.series_id)
            log.info("new series %s replaces %s: history cleared", stream_id[:8], self.series_id[:8])
            self._reset_series()
            self._notice = (f"New series {stream_id[:8]} started; history cleared", now)
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
            self._last_any_s = now
            if isinstance(msg, VolumeMsg):
                self._on_volume(msg, now)
            elif isinstance(msg, SlicesMsg):
                self._on_slices(msg, now)
            elif isinstance(msg, MetricsMsg):
                self._on_metrics(msg, now)
            elif isinstance(msg, FrameMsg):
                self._on_frame(msg, now)
            elif isinstance(msg, StartMsg):
                if msg.tilt_range_deg is not None:
                    self._tilt_range = (float(msg.tilt_range_deg[0]), float(msg.tilt_range_deg[1]))
            elif isinstance(msg, EndMsg):
                self._ended = msg
            else:
                return False
            self.version += 1
            return True

    def note_rejected(self, total: int) -> None:
        """The receiver's running count of rejected (invalid) messages."""
        with self._lock:
            self._rejected = int(total)

    def _set_reference(self, shape: tuple[int, int, int], voxel_nm: float | None, rank: int) -> None:
        if rank < self._ref_rank:
            return
        self._ref_rank = rank
        if self._ref_shape != shape:
            old = self._ref_shape
            if self._crosshair is None or old is None:
                self._crosshair = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
            else:
                self._crosshair = tuple(  # type: ignore[assignment]
                    min(n - 1, int((c + 0.5) * n / o)) for c, n, o in zip(self._crosshair, shape, old)
                )
            self._ref_shape = shape
        self._ref_voxel_nm = voxel_nm

    def _on_volume(self, msg: VolumeMsg, now: float) -> None:
        self._last_recon_s = now
        entry = VolumeEntry(seq=int(msg.seq), t_s=float(msg.t_s), data=msg.data, source=msg.source,
                            n_frames_used=int(msg.n_frames_used), voxel_nm=msg.voxel_nm, received_s=now)
        self.timeline.add(entry)
        rank = _REF_DIP if msg.source == "dip" else _REF_VOLUME
        self._set_reference(tuple(msg.data.shape), msg.voxel_nm, rank)

    def _on_slices(self, msg: SlicesMsg, now: float) -> None:
        self._last_recon_s = now
        self._update_gaps.observe(int(msg.seq), now)
        self._slices = (msg, now)
        self.timeline.has_live = True
        shape = (int(msg.xz.shape[0]), int(msg.xy.shape[0]), int(msg.xy.shape[1]))
        self._set_reference(shape, msg.voxel_nm, _REF_SLICES)
        if not self._crosshair_moved:  # until the operator moves it, follow the service's cut
            self._crosshair = tuple(int(i) for i in msg.index)  # type: ignore[assignment]

    def _on_metrics(self, msg: MetricsMsg, now: float) -> None:
        self._last_recon_s = now
        values = dict(msg.values)
        # The DIP's metrics come in messages of their own: keep them apart, so they do not blank
        # the SIRT's latency, frame counts and window between two SIRT updates.
        dip = {k: v for k, v in values.items() if k.startswith("dip_")}
        other = {k: v for k, v in values.items() if not k.startswith("dip_")}
        if other:
            self._metrics = other
        if dip:
            self._dip_metrics = dip
            self._last_dip_s = now
            self.dip.close_estimate()  # an estimate's metrics follow its volumes
        for name, value in values.items():
            if trace_group(name) is not None:
                self._trace(name).append(msg.t_s, value)
        seen = values.get("last_frame_seq")
        if seen is not None and seen >= 0:
            self._count_frames(int(seen) + 1, now)

    def _on_frame(self, msg: FrameMsg, now: float) -> None:
        self._frame_gaps.observe(int(msg.seq), now)
        self._frame = FrameView(data=msg.data, seq=int(msg.seq), angle_deg=float(msg.angle_deg),
                                t_s=float(msg.t_s), dose_e_per_A2=msg.dose_e_per_A2,
                                temperature_C=msg.temperature_C, received_s=now)
        self._angles.append(float(msg.angle_deg))
        if msg.tilt_range_deg is not None:
            self._tilt_range = (float(msg.tilt_range_deg[0]), float(msg.tilt_range_deg[1]))
        if msg.temperature_C is not None:
            self._trace("temperature_C").append(msg.t_s, msg.temperature_C)
        if msg.dose_e_per_A2 is not None:
            self._trace("dose_e_per_A2").append(msg.t_s, msg.dose_e_per_A2)
        self._count_frames(int(msg.seq) + 1, now)

    def _trace(self, name: str) -> Trace:
        trace = self._traces.get(name)
        if trace is None:
            trace = self._traces[name] = Trace(self.config.trace_points)
        return trace

    def _count_frames(self, count: int, now: float) -> None:
        if count > self._frames_count:
            self._frames_count = count
            self._last_progress_s = now
            self._progress.add(now, count)

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

    # -- crosshair, slab ----------------------------------------------------------------------------
    @property
    def reference_shape(self) -> tuple[int, int, int] | None:
        """(Z, Y, X) of the reference grid, None before any data."""
        return self._ref_shape

    @property
    def voxel_nm(self) -> float | None:
        """Voxel edge of the reference grid, nm, when the stream says."""
        return self._ref_voxel_nm

    @property
    def crosshair(self) -> tuple[int, int, int] | None:
        return self._crosshair

    def set_crosshair(self, z: float | None = None, y: float | None = None, x: float | None = None) -> None:
        """Move the crosshair to reference-grid voxel coordinates (floats are floored, then clipped)."""
        with self._lock:
            if self._ref_shape is None or self._crosshair is None:
                return
            new = []
            for value, old, n in zip((z, y, x), self._crosshair, self._ref_shape):
                new.append(old if value is None else min(max(int(math.floor(value)), 0), n - 1))
            self._crosshair = tuple(new)  # type: ignore[assignment]
            self._crosshair_moved = True

    @property
    def slab(self) -> int:
        return self._slab

    def set_slab(self, planes: int) -> None:
        """Average ``planes`` (≥ 1) neighbouring planes in each panel."""
        if int(planes) < 1:
            raise ValueError(f"slab: expected at least 1 plane, got {planes}")
        with self._lock:
            self._slab = int(planes)

    # -- what to draw -------------------------------------------------------------------------------
    def view(self) -> ViewData | None:
        """The slices to draw now, or None before any data. See the module docstring."""
        with self._lock:
            if self._ref_shape is None or self._crosshair is None:
                return None
            ref, cross, slab = self._ref_shape, self._crosshair, self._slab
            tl = self.timeline
            source, entries, idx = tl.source(), tl.entries(), tl.index()
            live = self._slices if source == "sirt" else None
            entry = entries[idx] if idx is not None else None
            n = len(entries)
            follow = tl.follow_live
        if live is not None and follow and slab == 1:
            msg, received = live
            if tuple(msg.index) == cross and (entry is None or msg.seq >= entry.seq):
                key = ("live", msg.seq, cross)
                return ViewData(xy=msg.xy, xz=msg.xz, yz=msg.yz, index=cross, scale=(1.0, 1.0, 1.0),
                                crosshair=cross, slab=1, live=True, seq=int(msg.seq), t_s=float(msg.t_s),
                                source=msg.source, received_s=received, key=key)
        if entry is None:
            return None
        shape = entry.data.shape
        index = tuple(min(m - 1, c * m // n) for c, m, n in zip(cross, shape, ref))
        scale = tuple(n / m for n, m in zip(ref, shape))
        xy, xz, yz = cut_slices(entry.data, index, slab, buffers=self._buffers)
        key = ("volume", source, entry.seq, index, slab, shape)
        return ViewData(xy=xy, xz=xz, yz=yz, index=index, scale=scale, crosshair=cross,  # type: ignore[arg-type]
                        slab=slab, live=False, seq=entry.seq, t_s=entry.t_s, source=entry.source,
                        received_s=entry.received_s, key=key, n_frames_used=entry.n_frames_used,
                        position=(idx + 1, n))  # type: ignore[operator]

    def note_displayed(self, view: ViewData | None = None, now: float | None = None) -> None:
        """Record one panel refresh (display fps; end-to-end latency of live data drawn)."""
        now = self.clock() if now is None else now
        with self._lock:
            self._n_displayed += 1
            self._display.add(now, self._n_displayed)
            lat = self._metrics.get("latency_s")
            # measured when live data is first drawn: redrawing it later (a stopped stream) is no delay
            if view is not None and view.live and lat is not None and view.key != self._e2e_key:
                self._e2e_key = view.key
                self._e2e_s = float(lat) + max(0.0, now - view.received_s)

    # -- levels and colormap ------------------------------------------------------------------------
    @property
    def levels(self) -> tuple[float, float] | None:
        return self._levels

    @property
    def levels_locked(self) -> bool:
        return self._levels_locked

    def lock_levels(self, locked: bool = True) -> None:
        """Hold the current levels across updates (True) or return to percentile auto-levels."""
        with self._lock:
            self._levels_locked = bool(locked)

    def set_levels(self, low: float, high: float) -> None:
        """Set levels by hand (e.g. dragging the histogram); this locks them."""
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"levels: expected finite low < high, got {low}, {high}")
        with self._lock:
            self._levels = (float(low), float(high))
            self._levels_locked = True

    def auto_levels(self, view: ViewData | None) -> tuple[float, float] | None:
        """Update the levels from ``view``'s slices (percentiles) unless locked; return the levels."""
        if view is not None and not self._levels_locked:
            levels = percentile_levels((view.xy, view.xz, view.yz), self.config.low_pct, self.config.high_pct)
            with self._lock:
                if levels is not None and not self._levels_locked:
                    self._levels = levels
        return self._levels

    @property
    def colormap(self) -> str:
        return self._colormap

    def set_colormap(self, name: str) -> None:
        if name not in COLORMAPS:
            raise ValueError(f"colormap: expected one of {', '.join(COLORMAPS)}, got {name!r}")
        with self._lock:
            self._colormap = name

    # -- other panels --------------------------------------------------------------------------------
    def latest_frame(self) -> FrameView | None:
        return self._frame

    def coverage(self) -> CoverageData:
        """Tilt-angle coverage for the polar plot."""
        with self._lock:
            angles = np.array(self._angles, dtype=np.float64)
            window = self._metrics.get("window_frames")
            rng = self._tilt_range
            total = self._metrics.get("frames_seen")
        return CoverageData.from_angles(angles, window_frames=window, tilt_range_deg=rng, frames_total=total)

    def traces(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Metric or frame-field name -> (t_s (N,), values (N,)); see :data:`TRACE_LABELS`."""
        with self._lock:
            return {name: trace.arrays() for name, trace in self._traces.items() if len(trace)}

    def metrics(self) -> dict[str, float]:
        """The newest ``metrics/1`` values: the SIRT's and the DIP's (``dip_*``) together."""
        with self._lock:
            return {**self._metrics, **self._dip_metrics}

    def status(self, now: float | None = None) -> Status:
        """The status line now."""
        now = self.clock() if now is None else now
        cfg = self.config
        with self._lock:
            m = self._metrics
            seen = m.get("frames_seen")
            state, message, level = "live", "", "ok"
            if self._last_any_s is None:
                state = "waiting"
                where = self.recon_endpoint or self.frames_endpoint or "nothing"
                message = f"Waiting for data from {where}"
                if now - self._started_s > 3.0:
                    message += " — is `tiltstream recon --pub` running there?"
                level = "warn" if now - self._started_s > 3.0 else "info"
            elif self._ended is not None:
                state, level = "ended", "info"
                message = (f"Series {self._ended.stream_id[:8]} ended ({self._ended.reason}, "
                           f"{self._ended.n_frames} frames)")
            elif (self.recon_endpoint and self._last_recon_s is not None
                  and now - self._last_recon_s > cfg.silent_after_s):
                state, level = "silent", "error"
                message = (f"No messages from the reconstruction service for {now - self._last_recon_s:.0f} s"
                           " — stopped or disconnected?")
            elif self._last_progress_s is not None and now - self._last_progress_s > cfg.stall_after_s:
                state, level = "stalled", "warn"
                message = (f"No new frames for {now - self._last_progress_s:.0f} s — "
                           "stream stopped or acquisition paused")
            if self._notice is not None and now - self._notice[1] <= cfg.notice_s and level in ("ok", "info"):
                message, level = self._notice[0], "info"
            if level == "ok" and now - self._frame_gaps.last_gap_s < 5.0:
                # Skipped reconstruction updates are harmless (the display shows the newest anyway);
                # lost raw frames mean this viewer misses tilt angles: say so.
                message, level = "Viewer is dropping raw frames (network or this computer too slow)", "warn"
            lat = m.get("latency_s")
            dm = self._dip_metrics
            dip_frames, dip_steps, held = dm.get("dip_frames"), dm.get("dip_steps"), dm.get("dip_heldout_nrmse")
            return Status(
                recon_endpoint=self.recon_endpoint,
                frames_endpoint=self.frames_endpoint,
                state=state,
                series_id=self.series_id,
                frames_per_s=self._progress.rate(now),
                display_fps=self._display.rate(now),
                latency_s=None if lat is None else float(lat),
                end_to_end_s=self._e2e_s if self._e2e_s is not None else (None if lat is None else float(lat)),
                frames_seen=None if seen is None else int(seen),
                frames_dropped=self._frame_gaps.missing,
                updates_dropped=self._update_gaps.missing,
                rejected=self._rejected,
                message=message,
                level=level,
                source=self.timeline.source(),
                dip_available=len(self.dip) > 0,
                dip_frames=None if dip_frames is None else int(dip_frames),
                dip_steps=None if dip_steps is None else int(dip_steps),
                dip_heldout_nrmse=None if held is None else float(held),
                dip_age_s=None if self._last_dip_s is None else max(0.0, now - self._last_dip_s),
                service_rejects={k.partition(".")[2]: int(v) for k, v in m.items()
                                 if k.startswith("rejected.") and v > 0},
            )
