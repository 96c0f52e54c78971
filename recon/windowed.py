"""Windowed SIRT: "the volume at time t" from the frames acquired around t.

A continuously tilting golden-ratio series samples every angle range evenly in time, so the frames
inside a short time window form a sparse but well-spread tilt series of the particle as it was then.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator
from tiltstream.recon.sirt import sirt

__all__ = ["Window", "window_indices", "windowed_sirt"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """Which frames belong to time t: the ``frames`` nearest in time, or those within ±``seconds``/2.

    Exactly one of the two is set. A seconds-window that would hold fewer than ``min_frames``
    frames is widened to the ``min_frames`` nearest (the answer at a sparsely sampled time is
    still a volume, not an error).
    """

    frames: int | None = None
    seconds: float | None = None
    min_frames: int = 8

    def __post_init__(self) -> None:
        if (self.frames is None) == (self.seconds is None):
            raise ValueError("window: give exactly one of frames= or seconds=")
        if self.frames is not None and self.frames < 1:
            raise ValueError(f"window frames: expected ≥ 1, got {self.frames}")
        if self.seconds is not None and not (np.isfinite(self.seconds) and self.seconds > 0):
            raise ValueError(f"window seconds: expected a positive duration, got {self.seconds}")

    @classmethod
    def parse(cls, text: str) -> "Window":
        """'40' → 40 frames, '12s' → 12 seconds."""
        t = text.strip().lower()
        try:
            if t.endswith("s"):
                return cls(seconds=float(t[:-1]))
            return cls(frames=int(t))
        except ValueError:
            raise ValueError(f"window: expected a frame count like '40' or seconds like '12.5s', got {text!r}") from None


def window_indices(times_s: np.ndarray, t: float, window: Window) -> np.ndarray:
    """Indices (sorted by acquisition order) of the frames in ``window`` around time ``t``."""
    times_s = np.asarray(times_s, dtype=np.float64)
    dist = np.abs(times_s - t)
    if window.frames is not None:
        k = min(window.frames, times_s.size)
        idx = np.argsort(dist, kind="stable")[:k]
    else:
        idx = np.flatnonzero(dist <= 0.5 * window.seconds)
        if idx.size < min(window.min_frames, times_s.size):
            idx = np.argsort(dist, kind="stable")[: min(window.min_frames, times_s.size)]
    return np.sort(idx)


def windowed_sirt(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    query_times_s: Sequence[float],
    *,
    vol_shape: tuple[int, int, int],
    window: Window,
    num_iterations: int = 50,
    axis_offset_px: float = 0.0,
    warm_start: bool = True,
    device: str | torch.device = "auto",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(T, Z, Y, X) volumes at ``query_times_s`` from the frames around each time.

    Each time point is a SIRT over its window; with ``warm_start`` the previous time's volume seeds
    the next (times are visited in the given order, so give them sorted), which lets fewer
    iterations do. ``progress`` is called with 1 after every time point.
    """
    frames = np.asarray(frames, dtype=np.float32)
    n, ny, nu = frames.shape
    vol = VolumeGeometry(tuple(vol_shape))
    out = np.empty((len(query_times_s), *vol.shape), dtype=np.float32)
    prev: torch.Tensor | None = None
    for i, t in enumerate(query_times_s):
        idx = window_indices(times_s, float(t), window)
        geom = ProjectionGeometry(np.asarray(angles_deg)[idx], (ny, nu), axis_offset_px)
        A = operator(vol, geom, device=device)
        y = torch.as_tensor(frames[idx], device=A.device)
        x = sirt(A, y, num_iterations, x_init=prev if warm_start else None)
        prev = x
        out[i] = x.cpu().numpy()
        log.debug("t=%.2f s: %d frames, angles %.1f..%.1f", t, idx.size, geom.angles_deg.min(), geom.angles_deg.max())
        if progress is not None:
            progress(1)
    return out
