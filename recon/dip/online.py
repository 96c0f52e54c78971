"""The DIP trained online, while the series grows: frames join the training set as they arrive, the
model is warm-started and never restarted, and refreshed 4-D estimates come out every few seconds.

:class:`GrowingSeriesData` is :class:`~.data.SeriesData` that grows (frames binned to a working
size, storage doubled as needed, every k-th frame held out as it arrives so the held-out set is
spread over time and never fitted). :class:`OnlineDipTrainer` is the offline
:class:`~.fit.DipTrainer` on such data, with a sampler that gives new frames their share of
steps, a learning rate that does not decay to nothing, and a time span that widens as the series
outgrows it. :class:`OnlineDip` runs it in a background thread at low OS priority and hands its
estimates to a callback; the recon service publishes them beside the streaming SIRT::

    online = OnlineDip(OnlineDipConfig(), on_estimate=queue.append)
    online.start_series("abc", (256, 256))
    online.add_frame(frame, angle_deg=12.3, t_s=4.5)   # cheap; any thread
    online.start()                                    # background training
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from tiltstream.recon.dip.data import BatchSampler, estimate_value_scale
from tiltstream.recon.dip.fit import DipTrainer
from tiltstream.recon.dip.losses import learning_rate
from tiltstream.recon.dip.model import DipGeometry
from tiltstream.recon.dip.params import DipParams
from tiltstream.recon.binning import bin_factor, bin_frame, binned_geometry
from tiltstream.recon.projector import resolve_device

__all__ = ["OnlineDipConfig", "GrowingSeriesData", "OnlineDipTrainer", "OnlineDip", "DipEstimate"]

log = logging.getLogger(__name__)


def _online_params() -> DipParams:
    # a smaller generator than offline (it must keep up on a CPU beside the streaming SIRT) and no
    # held-out split from the params: the online data hold out every k-th frame themselves. The
    # offline schedule (lr 5e-3, half-life 2000 steps): the former online one (2e-3, 500) ended a
    # real-time series 15 % worse against the truth. 4 random rows of each of 8 frames per step, not
    # whole frames: a step costs what its generated slices cost, so this is ~14× the steps per second,
    # and online the DIP is short of steps, not of data (a real-time 64³ series, one minute in: 0.061
    # with 4 rows, 0.071 with 8, 0.10 with 16, 0.17 with whole frames; benchmarks/RESULTS.md, online
    # DIP time to quality)
    return DipParams(steps=10**9, mlp_width=128, decoder_width=48, batch_frames=8, batch_rows=4, lr=5e-3,
                     lr_half_life=2000.0, eval_every=10**9, heldout_fraction=0.0, ema_decay=0.995)


@dataclass(frozen=True)
class OnlineDipConfig:
    """Online DIP settings.

    params : generator and loss settings (``steps``/``eval_every``/``heldout_fraction`` unused).
    max_edge : frames are block-averaged so that their larger edge is at most this (the DIP works
        on the binned series; bounded compute and memory). None: full size.
    vol_z : volume thickness (binned voxels); None: the binned frame width.
    min_frames : training starts once this many frames arrived.
    heldout_every : every k-th frame is held out (never fitted) and scores the model.
    recent_frames : half of each batch comes from the newest this-many training frames.
    lr_floor : the learning rate decays with ``params.lr_half_life`` but not below this share.
    publish_period_s : least wall time between two published estimates.
    first_publish_steps : no estimate is published before this many training steps (an untrained
        generator's volume is noise, not news for the operator); the end-of-series estimate
        (:meth:`OnlineDip.flush`) is published regardless.
    n_times : volumes per estimate, spread evenly over the series so far (the last at its end).
    horizon_s : initial time span the model covers (widened ×2 when outgrown); None: twice the
        span of the first ``min_frames`` frames.
    max_frames : stored frames at most (older training frames are dropped past it).
    device : "auto", "cpu", "cuda", ...
    nice : OS priority increase of the training thread (Linux), so intake and SIRT come first.
    """

    params: DipParams = field(default_factory=_online_params)
    max_edge: int | None = 64
    vol_z: int | None = None
    min_frames: int = 16
    heldout_every: int = 10
    recent_frames: int = 32
    lr_floor: float = 0.2
    publish_period_s: float = 10.0
    first_publish_steps: int = 150
    n_times: int = 6
    horizon_s: float | None = None
    max_frames: int = 20_000
    device: str = "auto"
    nice: int = 10

    def __post_init__(self) -> None:
        if self.params.frame_shifts:
            raise ValueError("params.frame_shifts: not supported online (the frame count grows)")
        if self.first_publish_steps < 0:
            raise ValueError(f"first_publish_steps: expected ≥ 0, got {self.first_publish_steps}")
        for name in ("min_frames", "heldout_every", "recent_frames", "n_times", "max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected ≥ 1, got {getattr(self, name)}")
        if self.min_frames < 3:
            raise ValueError(f"min_frames: expected ≥ 3, got {self.min_frames}")
        if self.max_edge is not None and self.max_edge < 4:
            raise ValueError(f"max_edge: expected None or ≥ 4, got {self.max_edge}")
        if not 0.0 <= self.lr_floor <= 1.0:
            raise ValueError(f"lr_floor: expected a share in [0, 1], got {self.lr_floor}")


class GrowingSeriesData:
    """Frames (N, Y, U) on the device with the attributes :class:`~.fit.DipTrainer` reads from
    :class:`~.data.SeriesData`, growing by :meth:`append`. Frame ``i`` (in arrival order) is held
    out when ``i % heldout_every == heldout_every // 2``. Scales are fixed by :meth:`calibrate`."""

    def __init__(self, frame_shape: tuple[int, int], *, vol_z: int, device: torch.device, heldout_every: int,
                 capacity: int = 256):
        self.ny, self.nu = (int(s) for s in frame_shape)
        self.nz = int(vol_z)
        self.device = device
        self.heldout_every = int(heldout_every)
        self.n = 0
        self._frames = torch.zeros((capacity, self.ny, self.nu), device=device)
        self._times = torch.zeros(capacity, device=device)
        self._angles = torch.zeros(capacity, device=device)
        self.angles_deg = np.zeros(0)
        self.times_s = np.zeros(0)
        self._train: list[int] = []
        self._held: list[int] = []
        self.train_idx = np.zeros(0, dtype=np.int64)
        self.heldout_idx = np.zeros(0, dtype=np.int64)
        self.digest = "online"
        self.data_scale = self.value_scale = 1.0
        self.mean_value = 0.0
        self.frame_interval_s = 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.nz, self.ny, self.nu)

    @property
    def frames(self) -> torch.Tensor:
        return self._frames[: self.n]

    @property
    def times(self) -> torch.Tensor:
        return self._times[: self.n]

    @property
    def angles(self) -> torch.Tensor:
        return self._angles[: self.n]

    def append(self, frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray) -> None:
        """Add (K, Y, U) frames with their angles and times (already validated and binned)."""
        k = len(frames)
        if k == 0:
            return
        for name, values in (("_frames", frames), ("_times", times_s), ("_angles", angles_deg)):
            store = getattr(self, name)
            if self.n + k > store.shape[0]:  # double the storage
                grown = torch.zeros((max(2 * store.shape[0], self.n + k), *store.shape[1:]), device=self.device)
                grown[: self.n] = store[: self.n]
                store = grown
                setattr(self, name, grown)
            store[self.n:self.n + k] = torch.as_tensor(np.asarray(values, dtype=np.float32), device=self.device)
        self.angles_deg = np.concatenate([self.angles_deg, np.asarray(angles_deg, dtype=np.float64)])
        self.times_s = np.concatenate([self.times_s, np.asarray(times_s, dtype=np.float64)])
        for i in range(self.n, self.n + k):
            (self._held if i % self.heldout_every == self.heldout_every // 2 else self._train).append(i)
        self.n += k
        self.train_idx = np.asarray(self._train, dtype=np.int64)
        self.heldout_idx = np.asarray(self._held, dtype=np.int64)
        self.frame_interval_s = float(np.median(np.diff(np.sort(self.times_s)))) if self.times_s.size > 1 else 1.0

    def calibrate(self, axis_offset_px: float = 0.0) -> None:
        """Fix the data and value scales from the frames so far (see :class:`~.data.SeriesData`)."""
        frames = self.frames.cpu().numpy()
        self.data_scale = float(np.sqrt(np.mean(np.square(frames, dtype=np.float64)))) or 1.0
        self.mean_value = max(float(np.mean(frames.sum(axis=2, dtype=np.float64))) / (self.nz * self.nu), 0.0)
        self.value_scale = estimate_value_scale(frames, self.angles_deg, self.nz, axis_offset_px=axis_offset_px,
                                                device=self.device)

    def drop_oldest_training(self, n: int) -> None:
        """Forget the ``n`` oldest training frames (memory cap); they are no longer sampled."""
        self._train = self._train[n:]
        self.train_idx = np.asarray(self._train, dtype=np.int64)


class RecentSampler(BatchSampler):
    """Half of every batch from the newest ``recent`` training frames, half from all of them (new
    frames get fitted at once, old ones are not forgotten); rows as :class:`BatchSampler`'s. Follows
    a growing set."""

    def __init__(self, data: GrowingSeriesData, *, batch_frames: int, batch_rows: int | None, recent: int,
                 seed: int):
        super().__init__(np.zeros(1, dtype=np.int64), data.ny, batch_frames=batch_frames, batch_rows=batch_rows,
                         seed=seed)
        self.data = data
        self.recent = int(recent)
        self.want = int(batch_frames)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        train = torch.as_tensor(self.data.train_idx)
        f = min(self.want, train.numel())
        n_new = f // 2
        newest = train[-self.recent:]
        picks = torch.cat([newest[torch.randint(newest.numel(), (n_new,), generator=self.gen)],
                           train[torch.randperm(train.numel(), generator=self.gen)[: f - n_new]]])
        return picks, self.rows(picks.numel())


class OnlineDipTrainer(DipTrainer):
    """:class:`~.fit.DipTrainer` on :class:`GrowingSeriesData` (calibrated, ≥ 3 frames)."""

    def __init__(self, data: GrowingSeriesData, config: OnlineDipConfig, *, t0_s: float,
                 axis_offset_px: float | None = None):
        self.config = config
        offset = config.params.axis_offset_px if axis_offset_px is None else axis_offset_px  # of the binned frames
        p = replace(config.params, heldout_fraction=0.0, patience=None, time_limit_s=None, vol_z=data.nz,
                    axis_offset_px=offset)
        span = float(data.times_s.max() - t0_s)
        horizon = config.horizon_s if config.horizon_s is not None else 2.0 * max(span, data.frame_interval_s)
        geometry = DipGeometry(data.shape, (t0_s, t0_s + max(horizon, span, 1e-3)), data.value_scale)
        self._setup(data, p, geometry)

    def _make_sampler(self) -> BatchSampler:
        return RecentSampler(self.data, batch_frames=self.params.batch_frames, batch_rows=self.params.batch_rows,
                             recent=self.config.recent_frames, seed=self.params.seed)

    def learning_rate(self) -> float:
        return max(learning_rate(self.step, self.params), self.config.lr_floor * self.params.lr)

    def cover_until(self, t_s: float) -> bool:
        """Double the model's time span (from its start) until it covers ``t_s``; True if widened.
        The learnt function of time is kept (:meth:`~.model.SpaceTimeGenerator.double_time_span`
        moves the time encoding's octaves), so the model goes on where it was instead of re-fitting a
        stretched time axis (that re-fit doubled the error for ~50 s: benchmarks/RESULTS.md)."""
        if t_s <= self.model.geom.t_range_s[1]:
            return False
        while self.model.geom.t_range_s[1] < t_s:
            self.model.double_time_span(self.optimizer)
            if self.ema_model is not None:
                self.ema_model.double_time_span()
        t0, t1 = self.model.geom.t_range_s
        log.info("online DIP: time span widened to %.1f–%.1f s", t0, t1)
        return True

    def heldout_recent(self, n: int = 32) -> float | None:
        """Held-out NRMSE over the newest ``n`` held-out frames (None before the first)."""
        idx = self.data.heldout_idx[-n:]
        return self.heldout_nrmse(idx) if idx.size else None


@dataclass(frozen=True)
class DipEstimate:
    """One refreshed 4-D estimate: ``volumes`` (T, Z, Y, X) at ``times_s``, and how it was made."""

    stream_id: str
    times_s: np.ndarray
    volumes: np.ndarray
    step: int
    n_frames: int
    heldout_nrmse: float | None
    loss: float
    steps_per_s: float
    bin_factor: int
    pixel_nm: float | None = None

    def metrics(self) -> dict[str, float]:
        values = {"dip_steps": float(self.step), "dip_frames": float(self.n_frames), "dip_loss": self.loss,
                  "dip_steps_per_s": self.steps_per_s}
        if self.heldout_nrmse is not None:
            values["dip_heldout_nrmse"] = float(self.heldout_nrmse)
        return {k: v for k, v in values.items() if math.isfinite(v)}


class OnlineDip:
    """Background DIP training on a live series; thread-safe :meth:`add_frame`.

    ``on_estimate(DipEstimate)`` is called from the training thread at most every
    ``config.publish_period_s``; it must be quick (e.g. append to a queue).
    """

    def __init__(self, config: OnlineDipConfig | None = None, *,
                 on_estimate: Callable[[DipEstimate], Any] | None = None):
        self.config = config or OnlineDipConfig()
        self.on_estimate = on_estimate
        self.device = resolve_device(self.config.device)
        self._lock = threading.Lock()
        self._pending: list[tuple[np.ndarray, float, float]] = []
        self._stream_id: str | None = None
        self._series_id: str | None = None
        self._data_generation = -1
        self._generation = 0
        self._frame_shape: tuple[int, int] | None = None
        self._pixel_nm: float | None = None
        self.factor = 1
        self._axis_offset_px = self.config.params.axis_offset_px
        self.rejected = 0
        self.data: GrowingSeriesData | None = None
        self.trainer: OnlineDipTrainer | None = None
        self._last_publish = -math.inf
        self._steps_at_publish = (0, time.monotonic())
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.error: BaseException | None = None

    # -- any thread -------------------------------------------------------------------------------
    def start_series(self, stream_id: str, frame_shape: tuple[int, int], pixel_nm: float | None = None) -> None:
        """Forget the previous series; frames of ``stream_id`` come next."""
        with self._lock:
            self._stream_id = stream_id
            self._frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
            self.factor = bin_factor(self._frame_shape, self.config.max_edge)
            self._pixel_nm = None if pixel_nm is None else pixel_nm * self.factor
            self._pending.clear()
            self._generation += 1
        self._wake.set()

    def add_frame(self, frame: np.ndarray, *, angle_deg: float, t_s: float, stream_id: str | None = None) -> bool:
        """Queue one frame (binned here); False (and counted) if it is not finite or of another shape
        or series than the current one."""
        with self._lock:
            expected, sid = self._frame_shape, self._stream_id
        if expected is None or (stream_id is not None and stream_id != sid):
            self.rejected += 1
            return False
        a = np.asarray(frame)
        if a.shape != expected or not (math.isfinite(angle_deg) and math.isfinite(t_s)):
            self.rejected += 1
            log.warning("online DIP: frame %s at angle %s, t %s not taken (series frames are %s)", a.shape,
                        angle_deg, t_s, expected)
            return False
        binned = bin_frame(a, self.factor)
        if not np.isfinite(binned).all():
            self.rejected += 1
            return False
        with self._lock:
            if self._stream_id != sid:
                return False
            self._pending.append((binned, float(angle_deg), float(t_s)))
        self._wake.set()
        return True

    @property
    def stream_id(self) -> str | None:
        return self._stream_id

    @property
    def n_frames(self) -> int:
        return 0 if self.data is None else self.data.n

    # -- the training thread ----------------------------------------------------------------------
    def start(self) -> None:
        """Train in a daemon thread until :meth:`stop`."""
        if self._thread is not None:
            return
        # the optimiser's first step imports torch._dynamo (seconds); do it here, not at low priority
        # in the training thread while frames are waiting
        import torch._dynamo  # noqa: F401, PLC0415

        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="dip-online", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the training thread after its current optimiser step and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        if self.config.nice and hasattr(os, "setpriority"):
            with contextlib.suppress(OSError):  # Linux threads are tasks: lower this one's priority only
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.config.nice)
        try:
            while not self._stop.is_set():
                if not self.work(steps=5):
                    self._wake.wait(0.2)
                    self._wake.clear()
        except BaseException as exc:  # noqa: BLE001 - reported, never kills the service
            self.error = exc
            log.exception("online DIP stopped")

    def work(self, steps: int = 5) -> bool:
        """Absorb queued frames, train up to ``steps`` steps, publish if due; False if idle.
        (The training thread calls this in a loop; tests call it directly.)"""
        self._absorb()
        tr = self.trainer
        if tr is None:
            return False
        for _ in range(steps):
            if self._stop.is_set() and self._thread is threading.current_thread():
                return True
            loss = tr.train_step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"online DIP loss became {loss} at step {tr.step}")
            tr.last_loss = loss if not math.isfinite(tr.last_loss) else 0.9 * tr.last_loss + 0.1 * loss
        due = time.monotonic() - self._last_publish >= self.config.publish_period_s
        if due and tr.step >= self.config.first_publish_steps:
            self.publish()
        return True

    def _absorb(self) -> None:
        with self._lock:
            gen, sid = self._generation, self._stream_id
            pending, self._pending = self._pending, []
            shape = self._frame_shape
        if self._data_generation != gen:
            self._data_generation = gen
            self.data = self.trainer = None
            self._last_publish = -math.inf
            if shape is None:
                return
            (ny, nu), self._axis_offset_px = binned_geometry(shape, self.factor, self.config.params.axis_offset_px)
            self.data = GrowingSeriesData((ny, nu), vol_z=self.config.vol_z or nu, device=self.device,
                                          heldout_every=self.config.heldout_every)
            self._series_id = sid
        if not pending or self.data is None:
            return
        d = self.data
        d.append(np.stack([p[0] for p in pending]), np.array([p[1] for p in pending]),
                 np.array([p[2] for p in pending]))
        if self.trainer is None:
            if d.n < self.config.min_frames:
                return
            d.calibrate(self._axis_offset_px)
            self.trainer = OnlineDipTrainer(d, self.config, t0_s=float(d.times_s.min()), axis_offset_px=self._axis_offset_px)
            self._steps_at_publish = (0, time.monotonic())
            log.info("online DIP: training on %d frames of %s (binned ×%d), volume %s, on %s", d.n,
                     (d.ny, d.nu), self.factor, d.shape, self.device)
        else:
            self.trainer.cover_until(float(d.times_s.max()))
        excess = d.train_idx.size - self.config.max_frames
        if excess > 0:
            d.drop_oldest_training(excess)

    def flush(self) -> DipEstimate | None:
        """Take the frames still queued and publish an estimate now (call after :meth:`stop`)."""
        self._absorb()
        return self.publish()

    def publish(self) -> DipEstimate | None:
        """The current estimate (EMA weights) at ``n_times`` times over the series so far; passed to
        ``on_estimate`` and returned. None before training started."""
        tr, d = self.trainer, self.data
        if tr is None or d is None:
            return None
        lo, hi = float(d.times_s.min()), float(d.times_s.max())
        times = np.linspace(lo, hi, self.config.n_times) if hi > lo else np.array([hi])
        vols = tr.eval_model.volumes(times)
        held = tr.heldout_recent()
        steps0, t0 = self._steps_at_publish
        now = time.monotonic()
        rate = (tr.step - steps0) / (now - t0) if now > t0 else float("nan")
        self._steps_at_publish = (tr.step, now)
        est = DipEstimate(stream_id=self._series_id, times_s=times, volumes=vols, step=tr.step, n_frames=d.n,
                          heldout_nrmse=held, loss=float(tr.last_loss), steps_per_s=rate, bin_factor=self.factor,
                          pixel_nm=self._pixel_nm)
        self._last_publish = time.monotonic()
        if self.on_estimate is not None:
            self.on_estimate(est)
        return est
