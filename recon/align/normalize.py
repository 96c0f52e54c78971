"""Per-frame background and intensity normalisation of real detector frames.

A HAADF frame is ``scale_i · signal + offset_i`` plus noise: the detector adds an offset (often
large, and for signed integer files often negative, e.g. −31880 in an int16 FEI stack) and the
gain/beam current drifts from frame to frame. Alignment and reconstruction want the signal.

* **offset**: the background level of each frame, estimated as the mode of its darker half (the
  half-sample mode of Bickel & Frühwirth, robust to the particle and to a few hot pixels);
* **scale**: with ``scale="mass"`` each frame is divided by its total (background-free) intensity
  relative to the median over the series. In parallel-beam projection of a particle that stays in
  the field of view the total intensity is the same at every tilt angle, so what varies is gain.

Everything is computed in float64, so integer data (signed or not) never overflows or wraps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tiltstream.stream.series import check_finite_frames

__all__ = ["Normalization", "normalize_frames", "background_level", "half_sample_mode"]

SCALES = ("mass", "none")


@dataclass(frozen=True)
class Normalization:
    """What :func:`normalize_frames` did: ``out_i = (frame_i − offsets[i]) / scales[i]``.

    offsets : (N,) background level subtracted from each frame, in the input's units.
    scales : (N,) divisor of each frame after the offset (1 = unchanged).
    """

    offsets: np.ndarray
    scales: np.ndarray

    def apply(self, frames: np.ndarray) -> np.ndarray:
        """Normalise frames (N, Y, U) with these offsets and scales (float32 out)."""
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim != 3 or f.shape[0] != self.offsets.size:
            raise ValueError(f"frames: expected shape ({self.offsets.size}, Y, U), got {f.shape}")
        return ((f - self.offsets[:, None, None]) / self.scales[:, None, None]).astype(np.float32)


def half_sample_mode(values: np.ndarray) -> float:
    """Mode of a sample by repeatedly keeping the densest half (Bickel & Frühwirth 2006)."""
    v = np.sort(np.asarray(values, dtype=np.float64).reshape(-1))
    if v.size == 0:
        raise ValueError("half_sample_mode: expected at least one value, got none")
    while v.size > 3:
        h = (v.size + 1) // 2
        widths = v[h - 1:] - v[: v.size - h + 1]
        i = int(np.argmin(widths))
        v = v[i:i + h]
    if v.size == 3:
        v = v[:2] if v[1] - v[0] < v[2] - v[1] else (v[1:] if v[2] - v[1] < v[1] - v[0] else v[1:2])
    return float(np.mean(v))


def background_level(frame: np.ndarray, *, max_pixels: int = 1 << 16) -> float:
    """Background level of one frame: the half-sample mode of its darker half.

    Assumes dark-field contrast (the particle is brighter than the background, as in HAADF).
    Large frames are subsampled on a regular grid to at most ``max_pixels`` pixels.
    """
    f = np.asarray(frame, dtype=np.float64)
    step = max(1, int(np.ceil(np.sqrt(f.size / max_pixels))))
    v = f[::step, ::step].reshape(-1)
    return half_sample_mode(v[v <= np.median(v)])


def normalize_frames(
    frames: np.ndarray,
    *,
    subtract_background: bool = True,
    scale: str = "mass",
) -> tuple[np.ndarray, Normalization]:
    """Remove each frame's background offset and (optionally) its gain variation.

    Parameters
    ----------
    frames : (N, Y, U) frames of any real dtype, including signed or unsigned integers.
    subtract_background : subtract each frame's :func:`background_level`.
    scale : ``"mass"`` divides each frame by its total intensity over the median total (so the
        series keeps its overall level); ``"none"`` leaves the gain alone.

    Returns
    -------
    frames : (N, Y, U) float32, background ≈ 0.
    normalization : the offsets and scales applied (:class:`Normalization`).
    """
    f = np.asarray(frames)
    if f.ndim != 3 or min(f.shape) < 1:
        raise ValueError(f"frames: expected a non-empty 3-D array (N, Y, U), got shape {f.shape}")
    if not (np.issubdtype(f.dtype, np.integer) or np.issubdtype(f.dtype, np.floating)):
        raise ValueError(f"frames: expected real numbers (integer or float), got dtype {f.dtype}")
    if scale not in SCALES:
        raise ValueError(f"scale: expected one of {SCALES}, got {scale!r}")
    check_finite_frames(f)
    f64 = f.astype(np.float64)
    n = f.shape[0]
    offsets = np.array([background_level(fr) for fr in f64]) if subtract_background else np.zeros(n)
    scales = np.ones(n)
    if scale == "mass":
        mass = (f64 - offsets[:, None, None]).sum(axis=(1, 2))
        ref = float(np.median(mass))
        if not ref > 0:
            raise ValueError(
                f"scale='mass': expected frames brighter than their background (dark-field), got a median "
                f"total of {ref:.3g} after background removal; use scale='none'"
            )
        scales = np.where(mass > 0.05 * ref, mass / ref, 1.0)
    norm = Normalization(offsets=offsets, scales=scales)
    return norm.apply(f64), norm
