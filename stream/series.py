"""The in-memory tilt series every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["TiltSeries"]


@dataclass
class TiltSeries:
    """A tilt series in the tiltstream conventions.

    Attributes
    ----------
    frames : (N, Y, U) float32 array. Rows (Y) run along the tilt axis, columns (U) across it.
    angles_deg : (N,) float64 tilt angles in degrees.
    times_s : (N,) float64 mid-exposure acquisition times in seconds since stream start.
    exposure_s : (N,) float64 exposure (count) times in seconds, or None when unknown.
    pixel_nm : detector pixel size in nm (sample plane), or None when unknown.
    extra : per-frame extra fields, name -> (N,) or (N, k) array (e.g. ``dose_e_per_A2``,
        ``temperature_C``, ``stage_xyz``).
    metadata : free-form experiment metadata (JSON-serialisable).
    source : where the series came from (a path or a description), used in error messages.
    """

    frames: np.ndarray
    angles_deg: np.ndarray
    times_s: np.ndarray
    exposure_s: np.ndarray | None = None
    pixel_nm: float | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def __post_init__(self) -> None:
        self.frames = np.asarray(self.frames)
        self.angles_deg = np.asarray(self.angles_deg, dtype=np.float64).reshape(-1)
        self.times_s = np.asarray(self.times_s, dtype=np.float64).reshape(-1)
        if self.exposure_s is not None:
            self.exposure_s = np.asarray(self.exposure_s, dtype=np.float64).reshape(-1)
        self.validate()

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    @property
    def duration_s(self) -> float:
        return float(self.times_s.max() - self.times_s.min()) if self.n_frames else 0.0

    def validate(self) -> None:
        """Raise ValueError naming the field, what was expected and what was found."""
        src = self.source
        if self.frames.ndim != 3:
            raise ValueError(f"{src}: frames: expected a 3-D array (N, Y, U), got shape {self.frames.shape}")
        n = self.frames.shape[0]
        if n == 0:
            raise ValueError(f"{src}: frames: expected at least 1 frame, got 0")
        if min(self.frames.shape[1:]) < 1:
            raise ValueError(f"{src}: frames: expected non-empty frames, got shape {self.frames.shape}")
        for name in ("angles_deg", "times_s", "exposure_s"):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.shape != (n,):
                raise ValueError(f"{src}: {name}: expected {n} values (one per frame), got {arr.shape[0]}")
            bad = ~np.isfinite(arr)
            if bad.any():
                raise ValueError(
                    f"{src}: {name}: expected finite values, got NaN/Inf at frame(s) {np.flatnonzero(bad)[:10].tolist()}"
                )
        for name, arr in self.extra.items():
            if np.shape(arr)[:1] != (n,):
                raise ValueError(f"{src}: {name}: expected {n} values (one per frame), got shape {np.shape(arr)}")
        if self.pixel_nm is not None and not (0 < self.pixel_nm <= 1e6):  # as on the wire (start/1)
            raise ValueError(f"{src}: pixel_nm: expected a size in nm in (0, 1e6], got {self.pixel_nm}")
