"""The in-memory tilt series every reader returns and every writer takes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tiltstream.stream.validation import ANGLE_LIMIT_DEG

__all__ = ["TiltSeries", "ANGLE_RANGE", "angles_out_of_range", "real_dtype_problem", "check_finite_frames"]

#: what every tilt angle must be, as the wire protocol says it (``angle_deg``)
ANGLE_RANGE = f"degrees in [-{ANGLE_LIMIT_DEG:g}, {ANGLE_LIMIT_DEG:g}]"


def angles_out_of_range(angles_deg: np.ndarray) -> np.ndarray:
    """Indices of the finite angles (degrees) outside [-ANGLE_LIMIT_DEG, ANGLE_LIMIT_DEG]."""
    a = np.asarray(angles_deg, dtype=np.float64)
    return np.flatnonzero(np.isfinite(a) & (np.abs(a) > ANGLE_LIMIT_DEG))


def real_dtype_problem(dtype: Any) -> str | None:
    """None for real pixel values (bool, integer or float), else what is wrong with ``dtype``."""
    kind = np.dtype(dtype).kind
    return None if kind in "biuf" else f"dtype {np.dtype(dtype)}"


def check_finite_frames(frames: np.ndarray, where: str = "") -> None:
    """ValueError naming the frames (N, Y, U) that hold a NaN or Inf pixel (read one frame at a
    time, no full-size copy): the one rule of the reconstructions, the alignment and the DIP."""
    f = np.asarray(frames)
    if f.dtype.kind not in "fc":
        return
    bad = [i for i in range(f.shape[0]) if not np.isfinite(f[i]).all()]
    if bad:
        raise ValueError(f"{where}frames: expected finite pixel values, got NaN/Inf in frame(s) {bad[:10]}")


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
        dtype = real_dtype_problem(self.frames.dtype)
        if dtype is not None:
            raise ValueError(f"{src}: frames: expected real pixel values (integer or float), got {dtype}")
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
        far = angles_out_of_range(self.angles_deg)
        if far.size:
            raise ValueError(f"{src}: angles_deg: expected {ANGLE_RANGE}, got "
                             f"{self.angles_deg[far[0]]:g} at frame(s) {far[:10].tolist()}")
        if self.exposure_s is not None and (self.exposure_s < 0).any():
            neg = np.flatnonzero(self.exposure_s < 0)
            raise ValueError(f"{src}: exposure_s: expected exposure times in s >= 0, got "
                             f"{self.exposure_s[neg[0]]:g} at frame(s) {neg[:10].tolist()}")
        for name, arr in self.extra.items():
            if np.shape(arr)[:1] != (n,):
                raise ValueError(f"{src}: {name}: expected {n} values (one per frame), got shape {np.shape(arr)}")
        if self.pixel_nm is not None and not (0 < self.pixel_nm <= 1e6):  # as on the wire (start/1)
            raise ValueError(f"{src}: pixel_nm: expected a size in nm in (0, 1e6], got {self.pixel_nm}")

    def check_finite(self) -> None:
        """Raise ValueError naming the frames that hold NaN/Inf pixels (:func:`check_finite_frames`);
        a reconstruction of them is NaN everywhere. Not part of :meth:`validate`: it reads every pixel."""
        check_finite_frames(self.frames, f"{self.source}: ")
