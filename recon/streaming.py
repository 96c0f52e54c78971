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
"""

from __future__ import annotations

import logging
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

__all__ = ["StreamingParams", "StreamingSirt", "FrameRejected"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamingParams:
    """Streaming-SIRT settings.

    window_frames : most frames kept (bounded memory).
    window_s : also drop frames older than this many seconds before the newest (None: no limit).
    half_life_s : exponential forgetting; a frame this old weighs half (None: no forgetting).
    subset_size : frames per ordered-subset step.
    steps_per_update : ordered-subset steps run by each :meth:`StreamingSirt.update`.
    relaxation : λ.
    positivity : clip at zero after every step.
    """

    window_frames: int = 64
    window_s: float | None = None
    half_life_s: float | None = None
    subset_size: int = 8
    steps_per_update: int = 1
    relaxation: float = 1.0
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


@dataclass
class _Entry:
    seq: int
    angle_deg: float
    t_s: float
    block: Block  # the frame's one-frame projector, its data (U, Y) and inverse row sums
    col_sums: torch.Tensor  # (Z·X, 1)
    last_used: int = -1


class StreamingSirt:
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
        self.params = params or StreamingParams()
        self.vol_shape = tuple(int(s) for s in vol_shape)
        nz, ny, nx = self.vol_shape
        self.frame_shape = (ny, int(det_cols or nx))
        self.axis_offset_px = float(axis_offset_px)
        self.device = resolve_device(device)
        self._vol = VolumeGeometry(self.vol_shape)
        self._x = torch.zeros(nz * nx, ny, device=self.device)
        self._window: deque[_Entry] = deque()
        self._n_updates = 0
        self.n_frames_seen = 0
        self.last_residual = float("nan")

    @staticmethod
    def memory_needed(vol_shape: tuple[int, int, int], det_cols: int, params: StreamingParams | None = None) -> int:
        """Host bytes a :class:`StreamingSirt` of this size holds at most: the estimate and a few
        work volumes, and per window frame its data and its sparse projector block (and adjoint)."""
        params = params or StreamingParams()
        nz, ny, nx = (int(s) for s in vol_shape)
        voxels_per_slice = nz * nx
        per_frame = 4 * det_cols * ny + 2 * (N_TAPS * voxels_per_slice * 12 + 8 * (det_cols + voxels_per_slice))
        return 4 * 4 * voxels_per_slice * ny + params.window_frames * per_frame

    # -- intake -------------------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray, angle_deg: float, t_s: float, *, seq: int | None = None) -> None:
        """Add one frame (Y, U) to the window. Raises :class:`FrameRejected` and changes nothing on bad input."""
        arr, angle_deg, t_s, _ = check_frame(frame, angle_deg=angle_deg, t_s=t_s, expected_shape=self.frame_shape)
        arr = arr.astype(np.float32, copy=False)
        self._window.append(self._entry(arr, float(angle_deg), float(t_s), self.n_frames_seen if seq is None else seq))
        self.n_frames_seen += 1
        self._trim()

    def _entry(self, frame: np.ndarray, angle_deg: float, t_s: float, seq: int) -> _Entry:
        A = operator(self._vol, ProjectionGeometry([angle_deg], self.frame_shape, self.axis_offset_px),
                     backend="torch", device=self.device)
        data = frame if frame.flags.writeable else frame.copy()  # a received buffer is read-only
        block = Block.of(A, torch.as_tensor(data[None], device=self.device))
        return _Entry(seq, angle_deg, t_s, block, block.column_sums())

    def _trim(self) -> None:
        p = self.params
        while len(self._window) > p.window_frames:
            self._window.popleft()
        if p.window_s is not None:
            newest = self._window[-1].t_s
            while len(self._window) > 1 and newest - self._window[0].t_s > p.window_s:
                self._window.popleft()

    # -- update -------------------------------------------------------------------------------
    def _subset(self) -> list[_Entry]:
        """New frames first, then the least recently revisited, up to subset_size."""
        k = min(self.params.subset_size, len(self._window))
        order = sorted(self._window, key=lambda e: (e.last_used, -e.t_s))
        return order[:k]

    def _weights(self, subset: list[_Entry]) -> list[float]:
        hl = self.params.half_life_s
        if hl is None:
            return [1.0] * len(subset)
        newest = self._window[-1].t_s
        return [0.5 ** ((newest - e.t_s) / hl) for e in subset]

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

    @property
    def window_size(self) -> int:
        return len(self._window)

    @property
    def window_seqs(self) -> tuple[int, ...]:
        """The seqs of the frames in the window, oldest first."""
        return tuple(e.seq for e in self._window)

    @property
    def window_times(self) -> tuple[float, float]:
        if not self._window:
            return (float("nan"), float("nan"))
        return (self._window[0].t_s, self._window[-1].t_s)

    def reset(self) -> None:
        """Forget everything (a new series)."""
        self._x.zero_()
        self._window.clear()
        self.n_frames_seen = 0
        self._n_updates = 0
        self.last_residual = float("nan")

    def memory_bytes(self) -> int:
        """Bytes held by the estimate and the window (frames + projector blocks)."""
        total = self._x.numel() * 4
        for e in self._window:
            A = e.block.A
            total += e.block.y.numel() * 4 + 2 * A.nnz * 8 + (e.col_sums.numel() + e.block.R.numel()) * 4
        return total
