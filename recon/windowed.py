"""Windowed SIRT: "the volume at time t" from the frames acquired around t.

A continuously tilting golden-ratio series samples every angle range evenly in time, so the frames
inside a short time window form a sparse but well-spread tilt series of the particle as it was then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Window", "window_indices"]


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
