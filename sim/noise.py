"""Detector noise and specimen drift models. All randomness comes from an explicit
``numpy.random.Generator``."""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["drift_shifts", "poisson_noise"]


def poisson_noise(
    clean: np.ndarray,
    *,
    dose_e_per_A2: float | np.ndarray,
    pixel_nm: float,
    voxel_nm: float,
    scatter_per_nm: float = 0.02,
    rng: np.random.Generator,
) -> np.ndarray:
    """Shot noise of a HAADF detector, returned in the units of ``clean``.

    Each pixel receives ``dose·(10·pixel_nm)²`` electrons (dose in e⁻/Å², pixel in nm); the detector
    collects a fraction ``p = scatter_per_nm · clean · voxel_nm`` of them (``clean·voxel_nm`` is the
    pure-gold-equivalent path length in nm; p is capped at 1). Counts are Poisson and are divided by
    the expected counts per unit of ``clean``, so the result is an unbiased estimate of ``clean``
    wherever the cap is not reached, with variance ``clean / (electrons · scatter_per_nm · voxel_nm)``.

    Args:
        clean: noise-free frame(s), (..., Y, U), line integrals in voxel units (negative values are
            treated as 0).
        dose_e_per_A2: dose per frame; a scalar or an (N,) array for a stack (N, Y, U).
        pixel_nm, voxel_nm: detector pixel and contrast-volume voxel size (nm).
        scatter_per_nm: collected fraction per nm of gold.
        rng: random generator.

    Returns:
        float32 array shaped like ``clean``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"expected rng to be a numpy.random.Generator, got {type(rng).__name__}")
    clean = np.asarray(clean, dtype=np.float64)
    dose = np.asarray(dose_e_per_A2, dtype=np.float64)
    if dose.ndim == 1:
        if clean.ndim != 3 or dose.size != clean.shape[0]:
            raise ValueError(f"expected one dose per frame ({clean.shape[0]}), got {dose.size}")
        dose = dose[:, None, None]
    if np.any(dose <= 0):
        raise ValueError(f"expected dose_e_per_A2 > 0, got min {dose.min()}")
    if not (pixel_nm > 0 and voxel_nm > 0 and scatter_per_nm > 0):
        raise ValueError("expected pixel_nm, voxel_nm and scatter_per_nm > 0")
    electrons = dose * (10.0 * pixel_nm) ** 2
    per_unit = scatter_per_nm * voxel_nm  # collected fraction per unit of ``clean``
    fraction = np.clip(np.maximum(clean, 0.0) * per_unit, 0.0, 1.0)
    if np.any(fraction >= 1.0):
        log.warning("HAADF collected fraction capped at 1 in %d pixels; noise is biased there",
                    int(np.count_nonzero(fraction >= 1.0)))
    counts = rng.poisson(electrons * fraction)
    return (counts / (electrons * per_unit)).astype(np.float32)


def drift_shifts(
    times_s: np.ndarray,
    *,
    drift_px_per_s: float,
    jitter_px: float,
    rng: np.random.Generator,
    turn_rad_per_sqrt_s: float = 0.3,
) -> np.ndarray:
    """Per-frame specimen shifts (N, 2) = (dy, du) in pixels.

    Drift moves at a constant speed ``drift_px_per_s`` in a direction that starts random and wanders
    as a random walk (``turn_rad_per_sqrt_s`` radians rms per √s); the drift is 0 at the first frame.
    White jitter of ``jitter_px`` rms per axis is added to every frame. ``times_s`` (N,) must not
    decrease.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"expected rng to be a numpy.random.Generator, got {type(rng).__name__}")
    times = np.asarray(times_s, dtype=np.float64).reshape(-1)
    if drift_px_per_s < 0 or jitter_px < 0:
        raise ValueError(f"expected drift_px_per_s, jitter_px >= 0, got {drift_px_per_s}, {jitter_px}")
    dt = np.diff(times, prepend=times[:1])
    if np.any(dt < 0):
        raise ValueError("expected non-decreasing times_s")
    turns = np.cumsum(rng.normal(0.0, 1.0, times.size) * np.sqrt(dt)) * turn_rad_per_sqrt_s
    heading = rng.uniform(0.0, 2.0 * np.pi) + turns
    step = drift_px_per_s * dt
    drift = np.cumsum(np.stack([step * np.sin(heading), step * np.cos(heading)], axis=1), axis=0)
    jitter = rng.normal(0.0, jitter_px, (times.size, 2)) if jitter_px > 0 else np.zeros((times.size, 2))
    return drift + jitter
