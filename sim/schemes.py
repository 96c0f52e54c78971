"""Tilt schemes (which angles, in which order) and a stage/camera timing model (when).

All angles are in degrees, all times in seconds. A scheme returns a 1D float64 array of N angles in
acquisition order; :class:`TimingModel` turns such an array into per-frame start / mid-exposure
times and the angle range the stage sweeps during each exposure.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

GOLDEN_RATIO = (1.0 + math.sqrt(5.0)) / 2.0

__all__ = [
    "GOLDEN_RATIO",
    "SCHEMES",
    "TimingModel",
    "golden_ratio_angles",
    "incremental_angles",
    "linear_angles",
    "tilt_scheme",
]


def _check_range(n: int, lo: float, hi: float) -> None:
    if int(n) != n or n < 0:
        raise ValueError(f"expected a non-negative integer frame count, got {n!r}")
    if not hi > lo:
        raise ValueError(f"expected lo < hi, got lo={lo}, hi={hi}")


def golden_ratio_angles(n: int, *, lo: float = -70.0, hi: float = 70.0) -> np.ndarray:
    """Golden-ratio tilt angles ``θₙ = lo + (hi − lo)·frac(n·φ)`` for n = 0 … N−1.

    Returns a (N,) float64 array in degrees, all in ``[lo, hi)``; θ₀ = lo.
    """
    _check_range(n, lo, hi)
    k = np.arange(int(n), dtype=np.float64)
    return lo + (hi - lo) * np.mod(k * GOLDEN_RATIO, 1.0)


def linear_angles(
    n: int, *, lo: float = -70.0, hi: float = 70.0, step_deg: float | None = None
) -> np.ndarray:
    """Continuous back-and-forth sweeps lo → hi → lo → … at a fixed angular step.

    The path is a triangle wave that reflects at ``lo`` and ``hi``; frame k sits at path length
    ``k·step_deg`` from ``lo``. By default ``step_deg = (hi − lo)/(n − 1)`` so that one sweep holds all
    n frames. Returns a (N,) float64 array in degrees.
    """
    _check_range(n, lo, hi)
    if step_deg is None:
        step_deg = (hi - lo) / max(int(n) - 1, 1)
    if not step_deg > 0:
        raise ValueError(f"expected step_deg > 0, got {step_deg}")
    span = hi - lo
    path = np.arange(int(n), dtype=np.float64) * step_deg
    phase = np.mod(path, 2.0 * span)
    # Round to kill floating-point fuzz so that reflections land exactly on lo/hi.
    folded = np.where(phase <= span, phase, 2.0 * span - phase)
    return np.clip(lo + np.round(folded, 12), lo, hi)


def incremental_angles(
    n: int,
    *,
    lo: float = -70.0,
    hi: float = 70.0,
    step_deg: float = 2.0,
    n_interlace: int = 4,
) -> np.ndarray:
    """Interlaced incremental scheme: successive lo → hi sweeps at ``step_deg``.

    Sweep k starts at ``lo + (k mod n_interlace)·step_deg/n_interlace`` and steps by ``step_deg`` up
    to ``hi``; the stage then returns to ``lo`` for the next sweep. Returns (N,) float64 degrees.
    """
    _check_range(n, lo, hi)
    if not step_deg > 0:
        raise ValueError(f"expected step_deg > 0, got {step_deg}")
    if int(n_interlace) != n_interlace or n_interlace < 1:
        raise ValueError(f"expected a positive integer n_interlace, got {n_interlace!r}")
    sweeps: list[np.ndarray] = []
    total = 0
    k = 0
    while total < n:
        start = lo + (k % n_interlace) * step_deg / n_interlace
        sweep = start + step_deg * np.arange(int(math.floor((hi - start) / step_deg + 1e-9)) + 1)
        sweeps.append(sweep)
        total += sweep.size
        k += 1
    out = np.concatenate(sweeps) if sweeps else np.zeros(0)
    return out[: int(n)].astype(np.float64)


SCHEMES: dict[str, Callable[..., np.ndarray]] = {
    "golden": golden_ratio_angles,
    "linear": linear_angles,
    "incremental": incremental_angles,
}


def tilt_scheme(name: str, n: int, **kw: Any) -> np.ndarray:
    """Angles (N,) in degrees of the scheme ``name`` ("golden", "linear" or "incremental")."""
    try:
        fn = SCHEMES[name]
    except KeyError:
        raise ValueError(f"expected a scheme in {sorted(SCHEMES)}, got {name!r}") from None
    return fn(n, **kw)


@dataclasses.dataclass
class TimingModel:
    """When each frame is taken, given its tilt angle.

    Attributes:
        exposure_s: exposure time per frame (s).
        readout_s: camera readout / dead time after each exposure (s).
        tilt_speed_deg_s: maximal stage tilt speed (degree/s).
        backlash_pause_s: extra pause whenever the tilt direction reverses (s).
        settle_s: extra wait before each exposure after a stage move (s).
        continuous: True for a continuously tilting stage (exposures taken while moving, so each
            frame is blurred over an angle range); False for step-and-shoot (stage still during the
            exposure).

    Step-and-shoot: frame i starts ``readout + |Δθ|/speed + settle (+ backlash)`` after frame i−1
    ends. Continuous: the stage glides from θᵢ₋₁ to θᵢ at
    ``min(speed, |Δθ|/(exposure + readout))``,
    so consecutive mid-exposures are ``max(|Δθ|/speed, exposure + readout) + settle (+ backlash)``
    apart, and the exposure of frame i sweeps ``speed_i · exposure`` centred on θᵢ.
    """

    exposure_s: float = 0.1
    readout_s: float = 0.05
    tilt_speed_deg_s: float = 20.0
    backlash_pause_s: float = 0.5
    settle_s: float = 0.0
    continuous: bool = True

    def __post_init__(self) -> None:
        for name in ("exposure_s", "readout_s", "backlash_pause_s", "settle_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"expected {name} >= 0, got {getattr(self, name)}")
        if not self.tilt_speed_deg_s > 0:
            raise ValueError(f"expected tilt_speed_deg_s > 0, got {self.tilt_speed_deg_s}")

    @staticmethod
    def _moves(angles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame move size |Δθᵢ| (0 for frame 0) and whether the move reverses direction."""
        delta = np.diff(angles, prepend=angles[:1])
        reversal = np.zeros(angles.size, dtype=bool)
        last_sign = 0.0
        for i in range(1, angles.size):
            sign = np.sign(delta[i])
            if sign != 0:
                reversal[i] = last_sign != 0 and sign != last_sign
                last_sign = sign
        return np.abs(delta), reversal

    def times(self, angles_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exposure start, mid-exposure time and exposure length, each (N,) float64 in s.

        The first exposure starts at t = 0.
        """
        angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
        n = angles.size
        exposure = np.full(n, float(self.exposure_s))
        if n == 0:
            return np.zeros(0), np.zeros(0), exposure
        move, reversal = self._moves(angles)
        move_s = move / self.tilt_speed_deg_s
        pause = self.settle_s + self.backlash_pause_s * reversal
        if self.continuous:
            gap = np.maximum(move_s, self.exposure_s + self.readout_s) + pause
        else:
            gap = self.exposure_s + self.readout_s + move_s + pause
        gap[0] = 0.0
        starts = np.cumsum(gap)
        return starts, starts + 0.5 * exposure, exposure

    def tilt_speeds(self, angles_deg: np.ndarray) -> np.ndarray:
        """Stage speed (degree/s, ≥ 0) during each exposure; zeros for step-and-shoot."""
        angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
        if not self.continuous or angles.size < 2:
            return np.zeros(angles.size)
        move, _ = self._moves(angles)
        move[0] = move[1]  # the stage is already heading toward frame 1 during frame 0
        return np.minimum(self.tilt_speed_deg_s, move / (self.exposure_s + self.readout_s))

    def angle_range_during_exposure(self, angles_deg: np.ndarray) -> np.ndarray:
        """(N, 2) float64 angles (degrees) at the start and end of each exposure.

        The swept range ``speed_i · exposure_s`` is centred on the nominal angle and ordered along
        the direction of motion; both columns equal the nominal angle for step-and-shoot.
        """
        angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
        half = 0.5 * self.tilt_speeds(angles) * self.exposure_s
        direction = np.sign(np.diff(angles, prepend=angles[:1]))
        if angles.size > 1:
            direction[0] = np.sign(angles[1] - angles[0])
        direction[direction == 0] = 1.0
        return np.stack([angles - direction * half, angles + direction * half], axis=1)
