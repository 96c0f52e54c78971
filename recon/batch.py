"""Batch 4-D reconstruction of a whole tilt series: volumes at chosen times, FBP or SIRT."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from tiltstream.recon.fbp import fbp
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import Projector, operator, resolve_device
from tiltstream.recon.sirt import sirt
from tiltstream.recon.windowed import Window, window_indices

__all__ = ["BatchParams", "default_times", "reconstruct_4d", "windowed_sirt"]

METHODS = ("fbp", "sirt")


@dataclass(frozen=True)
class BatchParams:
    """Parameters of a batch reconstruction (stored as provenance in the result file)."""

    method: str = "sirt"
    iterations: int = 100
    window_frames: int | None = None
    window_seconds: float | None = None
    axis_offset_px: float = 0.0
    vol_z: int | None = None
    positivity: bool = True
    warm_start: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {METHODS}, got {self.method!r}")
        if self.iterations < 1:
            raise ValueError(f"iterations: expected ≥ 1, got {self.iterations}")

    @property
    def window(self) -> Window | None:
        if self.window_frames is None and self.window_seconds is None:
            return None
        return Window(frames=self.window_frames, seconds=self.window_seconds)

    def as_dict(self) -> dict:
        return asdict(self)


def default_times(times_s: np.ndarray, window: Window | None) -> np.ndarray:
    """A sensible spread of query times: the middle for a static reconstruction, else evenly spaced
    times whose windows stay inside the series (about two windows per window length, 2–12 times)."""
    t = np.sort(np.asarray(times_s, dtype=np.float64))
    if window is None or t.size < 2:
        return np.array([0.5 * (t[0] + t[-1])])
    if window.frames is not None:
        half = min(window.frames, t.size) // 2
        lo, hi = t[min(half, t.size - 1)], t[max(t.size - 1 - half, 0)]
        n = int(np.clip(math.ceil(2 * t.size / max(window.frames, 1)), 2, 12))
    else:
        lo, hi = t[0] + 0.5 * window.seconds, t[-1] - 0.5 * window.seconds
        n = int(np.clip(math.ceil(2 * (t[-1] - t[0]) / window.seconds), 2, 12))
    if hi <= lo:
        return np.array([0.5 * (t[0] + t[-1])])
    return np.linspace(lo, hi, n)


def reconstruct_4d(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    query_times_s: Sequence[float],
    params: BatchParams,
    *,
    device: str | torch.device = "auto",
    progress: Callable[[int], None] | None = None,
    make_operator: Callable[[VolumeGeometry, ProjectionGeometry, torch.device], Projector] | None = None,
) -> np.ndarray:
    """(T, Z, Y, X) float32 volumes at ``query_times_s`` from frames (N, Y, U).

    Without a window every time point uses all frames (a static reconstruction, computed once).
    With a window each time uses the frames around it (:func:`window_indices`), warm-started from
    the previous time point for SIRT. ``make_operator(vol, proj, device)`` builds the projectors
    (default :func:`operator`; a slab worker passes one that reuses them across slabs).
    """
    frames = np.asarray(frames, dtype=np.float32)
    n, ny, nu = frames.shape
    nz = params.vol_z or nu
    vol = VolumeGeometry((nz, ny, nu))
    dev = resolve_device(device)
    window = params.window
    out = np.empty((len(query_times_s), *vol.shape), dtype=np.float32)
    prev: torch.Tensor | None = None
    cache: dict[bytes, np.ndarray] = {}
    for i, t in enumerate(query_times_s):
        idx = np.arange(n) if window is None else window_indices(times_s, float(t), window)
        key = idx.tobytes()
        if key not in cache:
            geom = ProjectionGeometry(np.asarray(angles_deg)[idx], (ny, nu), params.axis_offset_px)
            A = operator(vol, geom, device=dev) if make_operator is None else make_operator(vol, geom, dev)
            y = torch.as_tensor(frames[idx], device=dev)
            if params.method == "fbp":
                x = fbp(A, y, min_value=0.0 if params.positivity else None)
            else:
                x = sirt(A, y, params.iterations, x_init=prev if params.warm_start else None,
                         min_value=0.0 if params.positivity else None)
                prev = x
            cache = {key: x.cpu().numpy()}
        out[i] = cache[key]
        if progress is not None:
            progress(1)
    return out


def windowed_sirt(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    query_times_s: Sequence[float],
    *,
    window: Window,
    num_iterations: int = 50,
    vol_z: int | None = None,
    axis_offset_px: float = 0.0,
    device: str | torch.device = "auto",
) -> np.ndarray:
    """The volume at each of ``query_times_s`` (T, Z, Y, X) from the frames in ``window`` around it.

    Time points are visited in the given order, each warm-started from the previous one.
    """
    params = BatchParams(
        method="sirt",
        iterations=num_iterations,
        window_frames=window.frames,
        window_seconds=window.seconds,
        axis_offset_px=axis_offset_px,
        vol_z=vol_z,
    )
    return reconstruct_4d(frames, angles_deg, times_s, query_times_s, params, device=device)
