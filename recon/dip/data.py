"""The measured series as the DIP sees it: frames on the device, the held-out split, data scales and
the batch sampler (all randomness from one explicit ``torch.Generator``)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator
from tiltstream.recon.sirt import sirt

__all__ = ["heldout_split", "SeriesData", "BatchSampler", "series_digest", "estimate_value_scale"]


def heldout_split(times_s: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train, heldout) frame indices: ``round(fraction·N)`` frames spread evenly over acquisition
    time (the middle frame of each of that many equal-count time bins), the rest for training.

    Deterministic (no randomness): the same series always gets the same split. With golden-ratio
    tilting, frames evenly spaced in time are also well spread in angle.
    """
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    n = times.size
    n_held = int(round(fraction * n))
    if fraction > 0 and n >= 10:
        n_held = max(n_held, 1)
    n_held = min(n_held, max(n - 2, 0))
    order = np.argsort(times, kind="stable")
    picks = order[((np.arange(n_held) + 0.5) * n / max(n_held, 1)).astype(np.int64)] if n_held else order[:0]
    held = np.sort(picks)
    train = np.setdiff1d(np.arange(n), held)
    return train, held


def series_digest(frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray) -> str:
    """Short hash of the data a checkpoint was fitted to (a resume on other data is refused)."""
    h = hashlib.sha256()
    for a in (frames, angles_deg, times_s):
        arr = np.ascontiguousarray(a)
        h.update(str((arr.shape, arr.dtype.str)).encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


def estimate_value_scale(frames: np.ndarray, angles_deg: np.ndarray, vol_z: int, *, axis_offset_px: float = 0.0,
                         device: torch.device | str = "cpu", max_frames: int = 64, iterations: int = 20) -> float:
    """A typical voxel value of the particle (the 99.5th percentile of a quick static SIRT from at
    most ``max_frames`` frames spread over the series); the generator's output unit, so that both
    vacuum (0) and particle (≈ 1 unit) are easy to reach. Falls back to 1 for empty data."""
    n, ny, nu = frames.shape
    pick = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(np.int64))
    A = operator(VolumeGeometry((vol_z, ny, nu)), ProjectionGeometry(np.asarray(angles_deg)[pick], (ny, nu),
                 axis_offset_px), device=device)
    x = sirt(A, torch.as_tensor(frames[pick], device=A.device), iterations)
    scale = float(torch.quantile(x.reshape(-1)[:: max(1, x.numel() // 2_000_000)].float(), 0.995))
    return scale if np.isfinite(scale) and scale > 0 else 1.0


class SeriesData:
    """Frames (N, Y, U) float32, angles (N,) degrees, times (N,) s, on ``device``, with the split.

    ``data_scale`` is the RMS of the measured frames (residuals are measured in it);
    ``value_scale`` is a typical particle voxel value (:func:`estimate_value_scale`), the
    generator's output unit; ``mean_value`` the mean voxel value implied by the frames (a row's sum
    is the mass of its slice in the strip model).
    """

    def __init__(self, frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray, *,
                 heldout_fraction: float, vol_z: int, device: torch.device, axis_offset_px: float = 0.0):
        frames = np.asarray(frames, dtype=np.float32)
        angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
        times = np.asarray(times_s, dtype=np.float64).reshape(-1)
        if frames.ndim != 3:
            raise ValueError(f"frames: expected (N, Y, U), got shape {frames.shape}")
        n = frames.shape[0]
        if angles.size != n or times.size != n:
            raise ValueError(f"expected one angle and one time per frame ({n}), got {angles.size} and {times.size}")
        for name, arr in (("frames", frames), ("angles_deg", angles), ("times_s", times)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name}: expected finite values, found NaN/Inf")
        if n < 3:
            raise ValueError(f"expected at least 3 frames, got {n}")
        self.n, self.ny, self.nu = frames.shape
        self.nz = int(vol_z)
        self.device = device
        self.angles_deg = angles
        self.times_s = times
        self.digest = series_digest(frames, angles, times)
        self.train_idx, self.heldout_idx = heldout_split(times, heldout_fraction)
        self.frames = torch.as_tensor(frames, device=device)
        self.times = torch.as_tensor(times, device=device, dtype=torch.float32)
        self.angles = torch.as_tensor(angles, device=device, dtype=torch.float32)
        self.data_scale = float(np.sqrt(np.mean(np.square(frames, dtype=np.float64)))) or 1.0
        self.mean_value = max(float(np.mean(frames.sum(axis=2, dtype=np.float64))) / (self.nz * self.nu), 0.0)
        self.value_scale = estimate_value_scale(frames, angles, self.nz, axis_offset_px=axis_offset_px, device=device)
        self.frame_interval_s = float(np.median(np.diff(np.sort(times)))) if times.size > 1 else 1.0

    @property
    def shape(self) -> tuple[int, int, int]:
        """Volume shape (Z, Y, X)."""
        return (self.nz, self.ny, self.nu)


class BatchSampler:
    """Training frames in epochs (a fresh random order each epoch) and rows per frame.

    Its state (generator, current order, position) is part of a checkpoint, so a resumed run draws
    the same batches as an uninterrupted one.
    """

    def __init__(self, train_idx: np.ndarray, ny: int, *, batch_frames: int, batch_rows: int | None, seed: int):
        self.train_idx = torch.as_tensor(np.asarray(train_idx, dtype=np.int64))
        self.ny = ny
        self.batch_frames = min(batch_frames, self.train_idx.numel())
        self.batch_rows = None if batch_rows is None or batch_rows >= ny else int(batch_rows)
        self.gen = torch.Generator().manual_seed(int(seed) + 0x5EED)
        self.order = torch.empty(0, dtype=torch.int64)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(F,) frame indices and (F, R) row indices (R = Y for whole frames, rows ascending)."""
        picks = []
        need = self.batch_frames
        while need > 0:
            if self.pos >= self.order.numel():
                self.order = self.train_idx[torch.randperm(self.train_idx.numel(), generator=self.gen)]
                self.pos = 0
            take = self.order[self.pos:self.pos + need]
            picks.append(take)
            self.pos += take.numel()
            need -= take.numel()
        frames = torch.cat(picks)
        return frames, self.rows(frames.numel())

    def rows(self, n_frames: int) -> torch.Tensor:
        """(F, R) row indices for ``n_frames`` frames: all rows, or ``batch_rows`` random ones per frame
        (ascending)."""
        if self.batch_rows is None:
            return torch.arange(self.ny).expand(n_frames, -1)
        keys = torch.rand(n_frames, self.ny, generator=self.gen)
        return torch.sort(torch.argsort(keys, dim=1)[:, : self.batch_rows], dim=1).values

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": self.order.clone(), "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.gen.set_state(state["gen"])
        self.order = state["order"].clone()
        self.pos = int(state["pos"])
