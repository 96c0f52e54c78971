"""Streaming SIRT: fold every new frame into a time-local estimate of the current volume.

Each frame gets its own one-frame projector (:func:`~.projector.operator`, the strip model) and
SIRT block (:class:`~.sirt.Block`), kept in a bounded window (last ``window_frames`` frames and/or ``window_s`` seconds). Every update runs
ordered-subset SIRT steps on a subset of the window: the frames that arrived since the last update
plus the least recently revisited ones, so every frame in the window is revisited regularly while
the cost per update stays fixed. Older frames can also be down-weighted by exponential forgetting
(``half_life_s``). The estimate is warm-started from the previous one, never restarted.

    x ← clip(x + λ · C_S ⊙ Σ_{i∈S} w_i A_iᵀ R_i (y_i − A_i x)),   C_S = 1 / Σ_{i∈S} w_i A_iᵀ1

which is :func:`~.sirt.sirt_step` over the subset's blocks: with a window holding every frame and
no forgetting, the updates are batch OS-SIRT (:func:`~.sirt.sirt` with ``subsets``) step for step.

The estimate is a volume of the frames in the window, so it shows the particle at their (weighted)
mean acquisition time, :attr:`StreamingSirt.time_s`, half a window before the newest frame: that is
the time it is published and scored at. Before a new frame is folded in, it is compared with the
estimate's projection at its angle (:class:`Prediction`): the SIRT's score on a frame it has not
seen, and, in units of the frame's own noise level, how much the particle changed since.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from tiltstream.recon.footprint import N_TAPS
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator, resolve_device
from tiltstream.recon.sirt import Block, inverse, sirt_step
from tiltstream.stream.validation import FrameRejected, check_frame

__all__ = ["StreamingParams", "StreamingSirt", "FrameRejected", "Prediction", "noise_sigma", "WindowedEstimate"]


@dataclass(frozen=True)
class StreamingParams:
    """Streaming-SIRT settings.

    window_frames : most frames kept (bounded memory).
    window_s : also drop frames older than this many seconds before the newest (None: no limit).
    half_life_s : exponential forgetting; a frame this old weighs half (None: no forgetting).
    subset_size : frames per ordered-subset step.
    steps_per_update : ordered-subset steps run by each :meth:`StreamingSirt.update`.
    relaxation : λ. Above 1 the estimate converges in fewer steps when frames come back to back
        (1.5 measured best over bursts and idle refinement: benchmarks/RESULTS.md, live SIRT); batch
        SIRT keeps the classic 1.
    positivity : clip at zero after every step.
    """

    window_frames: int = 64
    window_s: float | None = None
    half_life_s: float | None = None
    subset_size: int = 8
    steps_per_update: int = 1
    relaxation: float = 1.5
    positivity: bool = True

    def __post_init__(self) -> None:
        if self.window_frames < 1 or self.subset_size < 1 or self.steps_per_update < 1:
            raise ValueError(
                "window_frames, subset_size, steps_per_update: expected ≥ 1, got "
                f"{self.window_frames}, {self.subset_size}, {self.steps_per_update}"
            )
        for name in ("window_s", "half_life_s"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive number of seconds or None, got {v}")
        if not (0 < self.relaxation < 2):
            raise ValueError(f"relaxation: expected 0 < λ < 2, got {self.relaxation}")

    def sweep_steps(self, n_frames: int) -> int:
        """Ordered-subset steps that visit each of ``n_frames`` window frames once."""
        return -(-int(n_frames) // self.subset_size)


def noise_sigma(frame: np.ndarray) -> float:
    """Robust noise level of a (Y, U) frame: the median absolute deviation of the differences of
    neighbouring pixels along both axes, scaled to a Gaussian σ (1.4826 · MAD / √2). Edges of the
    particle are a minority of pixel pairs and barely move the median. Pairs that are exactly equal
    (an empty, noise-free background counted to zero) carry no noise and are left out; 0 for a
    noise-free flat frame."""
    a = np.asarray(frame, dtype=np.float32)
    d = np.concatenate([np.diff(a, axis=0).ravel(), np.diff(a, axis=1).ravel()])
    d = d[d != 0]
    if d.size == 0:
        return 0.0
    return float(1.4826 / math.sqrt(2.0) * np.median(np.abs(d - np.median(d))))


@dataclass(frozen=True)
class Prediction:
    """A new frame against the current estimate's projection at its angle, before it is folded in.

    nrmse : ‖y − A x‖ / ‖y‖, the estimate's score on a frame it has not seen (comparable with the
        DIP's held-out NRMSE).
    change_sigma : rms(y − A x) / σ, σ the frame's own noise level (:func:`noise_sigma`): near the
        model's baseline while nothing changes; it rises when the particle starts to transform.
    """

    nrmse: float
    change_sigma: float

    @classmethod
    def of_sums(cls, r2: float, y2: float, count: int, sigma: float) -> "Prediction":
        """From Σ(y − A x)², Σy² and the pixel count (sums over any set of rows) and the frame's σ."""
        rms = math.sqrt(r2 / max(count, 1))
        return cls(nrmse=math.sqrt(r2 / y2) if y2 > 0 else float("nan"),
                   change_sigma=rms / sigma if sigma > 0 else float("nan"))


@dataclass
class _Entry:
    seq: int
    angle_deg: float
    t_s: float
    block: Block  # the frame's one-frame projector, its data (U, Y) and inverse row sums
    col_sums: torch.Tensor  # (Z·X, 1)
    last_used: int = -1


class WindowedEstimate:
    """What a sliding-window estimate tells about its window, from ``self._window`` (items with ``seq``
    and ``t_s``, oldest first) and ``self.params`` (:class:`StreamingParams`): shared by the one-process
    estimate and the slabbed one (:class:`~.live_slabs.SlabbedSirt`)."""

    _window: deque
    params: StreamingParams

    def _set_geometry(self, vol_shape: tuple[int, int, int], params: StreamingParams | None, det_cols: int | None,
                      axis_offset_px: float) -> None:
        """``params`` (default settings if None), ``vol_shape`` (Z, Y, X), ``frame_shape`` (Y, U) and
        ``axis_offset_px``, the same for every estimate of a series."""
        self.params = params or StreamingParams()
        self.vol_shape = tuple(int(s) for s in vol_shape)
        self.frame_shape = (self.vol_shape[1], int(det_cols or self.vol_shape[2]))
        self.axis_offset_px = float(axis_offset_px)

    def _trim_window(self) -> None:
        """Drop the oldest frames beyond ``params``' window (frames and seconds)."""
        window, p = self._window, self.params
        while len(window) > p.window_frames:
            window.popleft()
        if p.window_s is not None:
            newest = window[-1].t_s
            while len(window) > 1 and newest - window[0].t_s > p.window_s:
                window.popleft()

    @property
    def window_size(self) -> int:
        return len(self._window)

    @property
    def window_seqs(self) -> tuple[int, ...]:
        """The seqs of the frames in the window, oldest first."""
        return tuple(e.seq for e in self._window)

    @property
    def time_s(self) -> float:
        """The time the estimate shows: the mean acquisition time of the window's frames, weighted as
        the updates weigh them (forgetting); nan while empty."""
        if not self._window:
            return float("nan")
        t = np.fromiter((e.t_s for e in self._window), dtype=np.float64, count=len(self._window))
        hl = self.params.half_life_s
        w = np.ones_like(t) if hl is None else 0.5 ** ((t[-1] - t) / hl)
        return float(np.sum(w * t) / np.sum(w))

    @property
    def window_times(self) -> tuple[float, float]:
        if not self._window:
            return (float("nan"), float("nan"))
        return (self._window[0].t_s, self._window[-1].t_s)


class StreamingSirt(WindowedEstimate):
    """The live volume estimate. Not thread-safe: one thread calls :meth:`add_frame`/:meth:`update`.

    Parameters
    ----------
    vol_shape : (Z, Y, X); frames must be (Y, X) unless ``det_cols`` says otherwise.
    params : :class:`StreamingParams`.
    axis_offset_px : tilt-axis position right of the detector centre (pixels).
    device : "auto", "cpu" or "cuda".
    """

    def __init__(
        self,
        vol_shape: tuple[int, int, int],
        params: StreamingParams | None = None,
        *,
        det_cols: int | None = None,
        axis_offset_px: float = 0.0,
        device: str | torch.device = "auto",
    ):
        self._set_geometry(vol_shape, params, det_cols, axis_offset_px)
        nz, ny, nx = self.vol_shape
        self.device = resolve_device(device)
        self._vol = VolumeGeometry(self.vol_shape)
        self._x = torch.zeros(nz * nx, ny, device=self.device)
        self._window: deque[_Entry] = deque()
        self.reset()

    @staticmethod
    def memory_needed(vol_shape: tuple[int, int, int], det_cols: int, params: StreamingParams) -> int:
        """Host bytes a :class:`StreamingSirt` of this size holds at most: the estimate and a few
        work volumes, and per window frame its data and its sparse projector block (and adjoint)."""
        nz, ny, nx = (int(s) for s in vol_shape)
        voxels_per_slice = nz * nx
        per_frame = 4 * det_cols * ny + 2 * (N_TAPS * voxels_per_slice * 12 + 8 * (det_cols + voxels_per_slice))
        return 4 * 4 * voxels_per_slice * ny + params.window_frames * per_frame

    # -- intake -------------------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray, angle_deg: float, t_s: float, *, seq: int | None = None) -> None:
        """Add one frame (Y, U) to the window. Raises :class:`FrameRejected` and changes nothing on bad input."""
        arr, angle_deg, t_s, _ = check_frame(frame, angle_deg=angle_deg, t_s=t_s, expected_shape=self.frame_shape)
        arr = arr.astype(np.float32, copy=False)
        entry = self._entry(arr, float(angle_deg), float(t_s), self.n_frames_seen if seq is None else seq)
        self.last_prediction_sums = self._predict(entry) if len(self._window) >= self.params.subset_size else None
        self.last_prediction = (None if self.last_prediction_sums is None
                                else Prediction.of_sums(*self.last_prediction_sums, noise_sigma(arr)))
        self._window.append(entry)
        self.n_frames_seen += 1
        self._trim_window()

    @torch.no_grad()
    def _predict(self, entry: _Entry) -> tuple[float, float, int]:
        r = entry.block.y - entry.block.A.flat_forward(self._x)
        return float(torch.sum(r * r)), float(torch.sum(entry.block.y * entry.block.y)), r.numel()

    def _entry(self, frame: np.ndarray, angle_deg: float, t_s: float, seq: int) -> _Entry:
        A = operator(self._vol, ProjectionGeometry([angle_deg], self.frame_shape, self.axis_offset_px),
                     backend="torch", device=self.device)
        data = frame if frame.flags.writeable else frame.copy()  # a received buffer is read-only
        block = Block.of(A, torch.as_tensor(data[None], device=self.device))
        return _Entry(seq, angle_deg, t_s, block, block.column_sums())

    # -- update -------------------------------------------------------------------------------
    def _subset(self) -> list[_Entry]:
        """New frames first, then the least recently revisited, up to subset_size."""
        return sorted(self._window, key=lambda e: (e.last_used, -e.t_s))[: self.params.subset_size]

    def _weights(self, subset: list[_Entry]) -> list[float]:
        hl = self.params.half_life_s
        if hl is None:
            return [1.0] * len(subset)
        newest = self._window[-1].t_s
        # a frame stamped later than the newest one (a clock glitch) weighs 1, not 2^(its lead / hl)
        return [0.5 ** (max(0.0, newest - e.t_s) / hl) for e in subset]

    @torch.no_grad()
    def update(self, steps: int | None = None) -> float:
        """Run ``steps`` (default ``steps_per_update``) ordered-subset steps; returns the relative
        residual of the last subset."""
        if not self._window:
            return float("nan")
        p = self.params
        for _ in range(p.steps_per_update if steps is None else steps):
            self._n_updates += 1
            subset = self._subset()
            blocks = []
            col = torch.zeros_like(subset[0].col_sums)
            for e, w in zip(subset, self._weights(subset)):
                e.block.weight = w
                blocks.append(e.block)
                col.add_(e.col_sums, alpha=w)
                e.last_used = self._n_updates
            res2, norm2 = sirt_step(self._x, blocks, inverse(col, scale=p.relaxation),
                                    min_value=0.0 if p.positivity else None, measure=True)
            self.last_residual_sums = (res2, norm2)
            self.last_residual = math.sqrt(res2 / norm2) if norm2 > 0 else float("nan")
        return self.last_residual

    def project(self, angle_deg: float) -> np.ndarray:
        """The current estimate projected at ``angle_deg``: a (Y, U) frame (the same strip model)."""
        A = operator(self._vol, ProjectionGeometry([angle_deg], self.frame_shape, self.axis_offset_px),
                     backend="torch", device=self.device)
        with torch.no_grad():
            return A.flat_forward(self._x).T.contiguous().cpu().numpy()

    def push(self, frame: np.ndarray, angle_deg: float, t_s: float, *, seq: int | None = None) -> float:
        """:meth:`add_frame` then :meth:`update`."""
        self.add_frame(frame, angle_deg, t_s, seq=seq)
        return self.update()

    # -- state --------------------------------------------------------------------------------
    def volume(self) -> np.ndarray:
        """The current estimate, (Z, Y, X) float32."""
        nz, ny, nx = self.vol_shape
        return self._x.reshape(nz, nx, ny).permute(0, 2, 1).clone(memory_format=torch.contiguous_format).cpu().numpy()

    def slices(self, index: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The orthogonal slices through voxel ``index`` = (z, y, x) of the estimate, without copying
        the whole volume: xy (Y, X) at z, xz (Z, X) at y, yz (Z, Y) at x, float32."""
        nz, ny, nx = self.vol_shape
        iz, iy, ix = index
        x3 = self._x.reshape(nz, nx, ny)  # the flat layout (Z·X, Y)
        return (x3[iz].T.contiguous().cpu().numpy(), x3[:, :, iy].contiguous().cpu().numpy(),
                x3[:, ix, :].contiguous().cpu().numpy())

    def reset(self) -> None:
        """Forget everything (a new series)."""
        self._x.zero_()
        self._window.clear()
        self.n_frames_seen = 0
        self._n_updates = 0
        self.last_residual = float("nan")
        #: (Σ‖y − A x‖², Σ‖y‖²) of the last update's subset: :attr:`last_residual` as sums over rows
        self.last_residual_sums = (float("nan"), float("nan"))
        #: (Σ(y − A x)², Σy², pixels) behind :attr:`last_prediction`, or None with it
        self.last_prediction_sums: tuple[float, float, int] | None = None
        #: the newest frame against the estimate before it was folded in (None until the window holds
        #: ``subset_size`` frames: before that the estimate predicts nothing)
        self.last_prediction: Prediction | None = None

    def memory_bytes(self) -> int:
        """Bytes held by the estimate and the window (frames + projector blocks)."""
        total = self._x.numel() * 4
        for e in self._window:
            A = e.block.A
            total += e.block.y.numel() * 4 + 2 * A.nnz * 8 + (e.col_sums.numel() + e.block.R.numel()) * 4
        return total
