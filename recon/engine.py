"""The live reconstruction engine: protocol messages in, estimates out. No sockets, no threads.

:class:`ReconEngine` is the part of ``tiltstream recon`` that can be tested without a network: it
follows series (start/1, frame/1, end/1), folds frames into a :class:`~.streaming.StreamingSirt`,
and produces ``slices/1`` after every update, ``volume/1`` at a bounded rate (downsampled for
viewers) and ``metrics/1`` (latency, residual, window). The service wraps it with sockets.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tiltstream.recon.streaming import FrameRejected, StreamingParams, StreamingSirt
from tiltstream.recon.binning import bin_factor, bin_frame, binned_geometry, block_mean
from tiltstream.stream.budget import default_budget_bytes
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg
from tiltstream.stream.tracking import SeqNumbers
from tiltstream.stream.validation import check_frame

__all__ = ["EngineConfig", "ReconEngine"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    """Live-reconstruction settings.

    bin : frames are block-averaged ``bin``×``bin`` before the live SIRT (:func:`~.binning.bin_frame`):
        a volume ``bin``× smaller per edge, ``bin``³ fewer voxels, for cameras whose full frames
        cannot be reconstructed at the frame rate; voxel size, axis offset and published alignment
        shifts stay in full-resolution units (the recorder keeps the full frames).
    vol_z : volume thickness along the beam in full-resolution voxels; None → frame width.
    volume_period_s : least time between two published volumes (viewers take slices in between).
    volume_max_edge : published volumes are block-averaged down to at most this edge length.
    cpu_threads : torch CPU threads while the service runs (process-wide). Per-frame updates are many
        small sparse products: one thread is about as fast and does not collapse when the machine
        is shared (several OpenMP pools spinning on two cores slow every update tenfold). None:
        leave torch's setting.
    update_budget_s : after folding in new frames, keep running ordered-subset steps while the
        update stays within this many seconds (at least ``streaming.steps_per_update`` steps, at
        most one sweep over the window); None: exactly ``steps_per_update``.
    idle_refine_sweeps : while no frames arrive, keep refining the estimate, one step per loop, for
        up to this many sweeps over the window after the last frame (a step's cost is bounded, so a
        frame arriving meanwhile waits little; frames arriving in a burst still converge).
    idle_refine_steps : the same as a number of steps; overrides ``idle_refine_sweeps`` when set.
    align : correct each frame's drift before it is folded in (:mod:`tiltstream.recon.align.live`);
        the shift removed from the latest frame is published as ``align_dy_px``/``align_du_px``.
    align_params : live-alignment settings (None: defaults).
    memory_budget_bytes : a series whose estimate would need more host memory than this
        (:meth:`StreamingSirt.memory_needed`) is refused, counted as ``over_budget``, and its frames
        are dropped; None: :func:`~tiltstream.stream.budget.default_budget_bytes`.
    scheduler : a dask scheduler address or ``local:N``: the estimate lives on slab actors on its
        workers (:class:`~.live_slabs.SlabbedSirt`; the budget then covers what this process keeps,
        the window's raw frames); None: in this process.
    """

    streaming: StreamingParams = field(default_factory=StreamingParams)
    bin: int = 1
    vol_z: int | None = None
    axis_offset_px: float = 0.0
    device: str = "auto"
    volume_period_s: float = 1.0
    volume_max_edge: int = 128
    update_budget_s: float | None = 0.03
    idle_refine_sweeps: float = 8.0
    idle_refine_steps: int | None = None
    cpu_threads: int | None = 1
    align: bool = False
    align_params: object | None = None  # a tiltstream.recon.align.LiveAlignParams
    memory_budget_bytes: int | None = None
    scheduler: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.bin, bool) or int(self.bin) != self.bin or self.bin < 1:
            raise ValueError(f"bin: expected a positive integer, got {self.bin!r}")

    def live_geometry(self, frame_shape: tuple[int, int]) -> tuple[tuple[int, int, int], tuple[int, int], float]:
        """(Z, Y, X) of the live estimate, the (Y, U) of the frames it takes and their axis offset,
        for frames of ``frame_shape`` as sent."""
        (ny, nu), offset = binned_geometry(frame_shape, self.bin, self.axis_offset_px)
        nz = nu if self.vol_z is None else -(-int(self.vol_z) // self.bin)
        return (nz, ny, nu), (ny, nu), offset


class ReconEngine:
    """Feed it messages with :meth:`handle`; call :meth:`step` to update and collect outputs."""

    def __init__(self, config: EngineConfig | None = None, *, clock: Callable[[], float] = time.monotonic):
        self.config = config or EngineConfig()
        self.clock = clock
        self.estimator: StreamingSirt | None = None
        self.stream_id: str | None = None
        self.voxel_nm: float | None = None
        self.frame_shape: tuple[int, int] | None = None  # of the current series' frames as sent
        self.rejected: Counter[str] = Counter()
        self.latencies_s: list[float] = []
        self._pending: list[tuple[FrameMsg, float]] = []
        self._seqs = SeqNumbers()  # one 0, 1, 2, ... per published type and series
        self._last_volume_t = -math.inf
        self._last_t_s = float("nan")
        self._last_seq = -1
        self._refine_left = 0
        self.ended = False
        self.aligner = None  # a LiveAligner per series when config.align
        self._last_shift = None
        self.refused: str | None = None  # the last series refused (over budget)
        #: reject counts of the receiving socket (reason -> count), published with the metrics
        self.wire_rejects: dict[str, int] = {}
        self.slabs = None  # a live_slabs.SlabPool with config.scheduler: the cluster, kept for every series
        if self.config.scheduler:
            from tiltstream.recon.live_slabs import SlabPool  # noqa: PLC0415 (the [distributed] extra)

            self.slabs = SlabPool(self.config.scheduler)

    def close(self) -> None:
        """Let the slab actors and the cluster go (nothing to do in one process)."""
        if self.slabs is not None:
            self.slabs.close()

    # -- intake -------------------------------------------------------------------------------
    def handle(self, msg: object, received_at: float | None = None) -> None:
        """Take one validated protocol message (start/frame/end); others are ignored."""
        now = self.clock() if received_at is None else received_at
        if isinstance(msg, StartMsg):
            self._new_series(msg.stream_id, tuple(msg.frame_shape), msg.pixel_nm)
        elif isinstance(msg, FrameMsg):
            if msg.stream_id != self.stream_id:
                reason = "over_budget" if msg.stream_id == self.refused else "no_start"
                self.rejected[reason] += 1  # frames are no series without their start/1
                return
            self._pending.append((msg, now))
        elif isinstance(msg, EndMsg) and msg.stream_id == self.stream_id:
            self.ended = True

    def admits(self, frame_shape: tuple[int, int]) -> tuple[bool, int, int]:
        """Whether a series of ``frame_shape`` frames fits the memory budget: (fits, needed, budget)."""
        cfg = self.config
        vol_shape, (_, nu), _ = cfg.live_geometry(frame_shape)
        kind = StreamingSirt if self.slabs is None else self.slabs.estimator_type
        need = kind.memory_needed(vol_shape, nu, cfg.streaming)
        budget = default_budget_bytes() if cfg.memory_budget_bytes is None else cfg.memory_budget_bytes
        return need <= budget, need, budget

    def _new_series(self, stream_id: str, frame_shape: tuple[int, int], pixel_nm: float | None) -> None:
        cfg = self.config
        fits, need, budget = self.admits(frame_shape)
        if not fits:
            self.rejected["over_budget"] += 1
            self.refused = stream_id
            log.warning("series %s refused: frames %s (binned by %d) need %.1f GiB for the live estimate, budget "
                        "%.1f GiB (TILTSTREAM_MEMORY_BUDGET or --memory-budget; --bin N reconstructs N×N-binned "
                        "frames live); the current series goes on",
                        stream_id[:8], frame_shape, cfg.bin, need / 2**30, budget / 2**30)
            return
        vol_shape, shape, offset = cfg.live_geometry(frame_shape)
        self.stream_id = stream_id
        self.frame_shape = tuple(frame_shape)
        self.voxel_nm = None if pixel_nm is None else pixel_nm * cfg.bin
        make = StreamingSirt if self.slabs is None else self.slabs.estimator
        self.estimator = make(vol_shape, cfg.streaming, det_cols=shape[1], axis_offset_px=offset, device=cfg.device)
        self._pending.clear()
        if cfg.align:
            from tiltstream.recon.align.live import LiveAligner  # noqa: PLC0415 (only when asked for)

            self.aligner = LiveAligner(shape, cfg.align_params)
            self._last_shift = None
        self._last_volume_t = -math.inf
        self.latencies_s.clear()
        self.ended = False
        log.info("new series %s: frames %s, volume %s", stream_id[:8], frame_shape, self.estimator.vol_shape)

    # -- update -------------------------------------------------------------------------------
    @property
    def refining(self) -> bool:
        """True while idle refinement updates are still due."""
        return self._refine_left > 0 and self.estimator is not None and self.estimator.window_size > 0

    def stop_refining(self) -> None:
        """No more idle refinement until the next frame (after a failed update)."""
        self._refine_left = 0

    @property
    def n_pending(self) -> int:
        return len(self._pending)

    def step(self, *, force_volume: bool = False) -> list[object]:
        """Fold in every pending frame, run one update, and return the messages to publish.

        With nothing pending, refines the estimate (up to ``idle_refine_steps`` updates after the
        last frame) or, with ``force_volume``, re-publishes the current state.
        """
        est = self.estimator
        if est is None:
            return []
        if not self._pending:
            if self._refine_left > 0 and est.window_size:
                self._refine_left -= 1
                t0 = self.clock()
                residual = est.update(steps=1)  # short, so a frame arriving meanwhile waits little
                return self._outputs(residual, self.clock() - t0, force_volume)
            return self._outputs(est.last_residual, 0.0, True) if force_volume else []
        arrived = []
        keep = self.config.streaming.window_frames
        if len(self._pending) > keep:
            # a burst longer than the window: the older frames would leave the window at once, so
            # they are counted as seen but not folded in (the recorder keeps them all)
            superseded, self._pending = self._pending[:-keep], self._pending[-keep:]
            est.n_frames_seen += len(superseded)
            arrived.extend(t for _, t in superseded)
            self._last_seq = int(superseded[-1][0].seq)
        for msg, t_recv in self._pending:
            try:
                data = self._binned(msg.data)
                data = self._aligned(msg, data) if self.aligner is not None else data
                est.add_frame(data, float(msg.angle_deg), float(msg.t_s), seq=int(msg.seq))
            except FrameRejected as exc:
                self.rejected[exc.reason] += 1
                log.warning("frame seq %d rejected: %s", msg.seq, exc)
                continue
            arrived.append(t_recv)
            self._last_t_s = float(msg.t_s)
            self._last_seq = int(msg.seq)
        self._pending.clear()
        self._refine_left = self._idle_steps() if arrived else self._refine_left
        t0 = self.clock()
        residual = self._update(t0) if arrived else est.last_residual
        done = self.clock()
        self.latencies_s.extend(done - t for t in arrived)
        return self._outputs(residual, done - t0, force_volume)

    def _sweep_steps(self) -> int:
        """Ordered-subset steps that visit every frame of the window once."""
        return self.config.streaming.sweep_steps(self.estimator.window_size)

    def _idle_steps(self) -> int:
        cfg = self.config
        if cfg.idle_refine_steps is not None:
            return cfg.idle_refine_steps
        return math.ceil(cfg.idle_refine_sweeps * self._sweep_steps())

    def _update(self, t0: float) -> float:
        """``steps_per_update`` steps, then more while they fit ``update_budget_s`` (at most one sweep)."""
        est, budget = self.estimator, self.config.update_budget_s
        residual = est.update()
        steps = self.config.streaming.steps_per_update
        while budget is not None and steps < self._sweep_steps():
            spent = self.clock() - t0
            if spent + spent / steps > budget:  # the next step would overrun the budget
                break
            residual = est.update(steps=1)
            steps += 1
        return residual

    def _binned(self, data: np.ndarray) -> np.ndarray:
        """The frame as the estimator takes it: checked as sent (shape, values), then binned."""
        if self.config.bin == 1:
            return data  # the estimator checks it
        return bin_frame(check_frame(data, angle_deg=0.0, t_s=0.0, expected_shape=self.frame_shape)[0],
                         self.config.bin)

    def _aligned(self, msg: FrameMsg, data: np.ndarray) -> np.ndarray:
        """The frame with its drift removed (frames the estimator will reject pass through as they are)."""
        data = np.asarray(data)
        if data.shape != self.aligner.frame_shape or not np.isfinite(data).all():
            return data
        angle = float(msg.angle_deg)
        enough = self.estimator.window_size >= self.aligner.params.min_frames_for_reprojection
        reproj = self.estimator.project(angle) if enough else None
        corrected, self._last_shift = self.aligner.correct(data, angle, reprojection=reproj, seq=int(msg.seq))
        return corrected

    def next_seq(self, name: str) -> int:
        """The next seq of a message of type ``name`` (``"volume"``, ...) in the current series, also for
        outputs made beside the engine's own (the online DIP's): each type is one ordered stream from 0,
        so a subscriber's gap count means lost messages."""
        return self._seqs.next(self.stream_id, name)

    def _outputs(self, residual: float, update_s: float, force_volume: bool) -> list[object]:
        est = self.estimator
        # the estimate shows the particle at its window's mean time, not at the newest frame's
        t_est = est.time_s if math.isfinite(est.time_s) else self._last_t_s
        common = dict(stream_id=self.stream_id, t_s=t_est if math.isfinite(t_est) else 0.0)
        index = tuple(n // 2 for n in est.vol_shape)
        xy, xz, yz = est.slices(index)  # (a slabbed estimate gathers these slices, not the volume)
        out: list[object] = [
            SlicesMsg(**common, seq=self.next_seq("slices"), xy=xy, xz=xz, yz=yz, index=index, source="sirt",
                      voxel_nm=self.voxel_nm)
        ]
        now = self.clock()
        if force_volume or now - self._last_volume_t >= self.config.volume_period_s:
            self._last_volume_t = now
            vol = est.volume()
            small = block_mean(vol, bin_factor(vol.shape, self.config.volume_max_edge))
            voxel = None if self.voxel_nm is None else self.voxel_nm * vol.shape[0] / small.shape[0]
            out.append(VolumeMsg(**common, seq=self.next_seq("volume"), data=small, source="sirt",
                                 n_frames_used=est.window_size, voxel_nm=voxel))
        values = {
            "sirt_residual": float(residual),
            "update_s": float(update_s),
            "latency_s": float(self.latencies_s[-1]) if self.latencies_s else float("nan"),
            "frames_seen": float(est.n_frames_seen),
            "window_frames": float(est.window_size),
            "frames_rejected": float(sum(self.rejected.values())),
            "last_frame_seq": float(self._last_seq),
            "rejected_total": float(sum(self.wire_rejects.values()) + sum(self.rejected.values())),
            **{f"rejected.{k}": float(v) for k, v in (self.wire_rejects | dict(self.rejected)).items()},
        }
        if est.last_prediction is not None:
            values.update(sirt_predict_nrmse=est.last_prediction.nrmse, change_sigma=est.last_prediction.change_sigma)
        if self.slabs is not None:
            values["slab_rebuilds"] = float(est.slab_rebuilds)
        if self._last_shift is not None:
            b = self.config.bin  # the shift in pixels of the frames as sent
            values.update(align_dy_px=self._last_shift.dy * b, align_du_px=self._last_shift.du * b,
                          align_quality=self._last_shift.quality)
        # metrics are about the newest frame and update: at the newest frame's time (the change trace
        # rises when that frame shows a change), with the time the estimate shows beside
        values["estimate_t_s"] = common["t_s"]
        out.append(MetricsMsg(stream_id=self.stream_id, t_s=self._last_t_s if math.isfinite(self._last_t_s) else 0.0,
                              seq=self.next_seq("metrics"),
                              values={k: v for k, v in values.items() if math.isfinite(v)}))
        return out
