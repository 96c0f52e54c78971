"""One-call simulation of a complete tilt series: scheme → timing → projections → drift → noise."""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Any

import numpy as np

from .forward import project
from .noise import drift_shifts, poisson_noise
from .phantom_base import Phantom
from .schemes import TimingModel, tilt_scheme

log = logging.getLogger(__name__)

__all__ = ["SimulatedSeries", "simulate_series", "render_frames", "specimen_shifts", "default_blur_substeps"]

_BLUR_STEP_DEG = 0.5  # sub-angle spacing used for continuous-tilt blur


@dataclasses.dataclass
class SimulatedSeries:
    """A simulated tilt series with its ground truth.

    Attributes:
        frames: (N, Y, U) float32 projections (U = X), line integrals of contrast in voxel units.
        angles_deg: (N,) nominal tilt angles (degrees), acquisition order.
        times_s: (N,) mid-exposure times (s).
        exposure_s: (N,) exposure times (s).
        pixel_nm: detector pixel size (nm), equal to the phantom's voxel size.
        dose_e_per_A2: (N,) cumulative dose (e⁻/Å²) after each frame, or None when noise-free.
        shifts_px: (N, 2) applied image shifts (dy, du) in pixels.
        axis_offset_px: where the tilt axis projects, in pixels right of the detector centre
            (``j = u + (U−1)/2 + axis_offset_px``).
        phantom: the simulated particle.
        exponent: HAADF Z-exponent used.
        metadata: free-form description (scheme, timing, supersampling, conventions).
    """

    frames: np.ndarray
    angles_deg: np.ndarray
    times_s: np.ndarray
    exposure_s: np.ndarray
    pixel_nm: float
    dose_e_per_A2: np.ndarray | None
    shifts_px: np.ndarray
    axis_offset_px: float
    phantom: Phantom
    exponent: float
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def truth(self, t_s: float) -> np.ndarray:
        """Ground-truth contrast volume (Z, Y, X) float32 at time ``t_s`` (s)."""
        return self.phantom.contrast(t_s, self.exponent)

    def __len__(self) -> int:
        return int(self.frames.shape[0])


def default_blur_substeps(tilt_speed_deg_s: np.ndarray, exposure_s: np.ndarray) -> int:
    """Sub-angles for continuous-tilt blur: one per 0.5 degree swept in the longest sweep, 1 … 8."""
    sweep = float(np.max(np.asarray(tilt_speed_deg_s) * np.asarray(exposure_s), initial=0.0))
    return min(8, max(1, math.ceil(sweep / _BLUR_STEP_DEG)))


def specimen_shifts(times_s: np.ndarray, *, drift_px_per_s: float, jitter_px: float,
                    rng: np.random.Generator | None) -> np.ndarray:
    """(N, 2) image shifts (dy, du) in pixels at ``times_s``; zeros (drawing nothing) without drift or jitter."""
    if drift_px_per_s > 0 or jitter_px > 0:
        return drift_shifts(times_s, drift_px_per_s=drift_px_per_s, jitter_px=jitter_px, rng=rng)
    return np.zeros((len(times_s), 2))


def render_frames(
    phantom: Phantom,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    exposure_s: np.ndarray,
    tilt_speed_deg_s: np.ndarray,
    shifts_px: np.ndarray,
    *,
    exponent: float,
    blur_substeps: int,
    supersample: int,
    axis_offset_px: float,
    dose_e_per_A2: np.ndarray | None,
    scatter_per_nm: float,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Frames (N, Y, U) float32 of ``phantom``: HAADF projections, then shot noise for the dose of each
    frame (e⁻/Å², (N,); None: noise-free). Rendering a series in consecutive parts with one ``rng``
    gives the same frames as rendering it at once."""
    frames = project(
        phantom, angles_deg, times_s,
        exponent=exponent, exposure_s=exposure_s, tilt_speed_deg_s=tilt_speed_deg_s,
        blur_substeps=blur_substeps, supersample=supersample,
        axis_offset_px=axis_offset_px, shifts_px=shifts_px,
    )
    if dose_e_per_A2 is None:
        return frames
    return poisson_noise(frames, dose_e_per_A2=dose_e_per_A2, pixel_nm=phantom.voxel_nm, voxel_nm=phantom.voxel_nm,
                         scatter_per_nm=scatter_per_nm, rng=rng)


def simulate_series(
    phantom: Phantom,
    *,
    n_frames: int,
    scheme: str = "golden",
    lo: float = -70.0,
    hi: float = 70.0,
    timing: TimingModel | None = None,
    dose_e_per_A2: float | np.ndarray | None = None,
    exponent: float = 1.8,
    blur: bool = True,
    blur_substeps: int | None = None,
    drift_px_per_s: float = 0.0,
    jitter_px: float = 0.0,
    axis_offset_px: float = 0.0,
    supersample: int = 2,
    scatter_per_nm: float = 0.02,
    rng: np.random.Generator | None = None,
) -> SimulatedSeries:
    """Simulate ``n_frames`` HAADF frames of ``phantom`` acquired with ``scheme`` over [lo, hi] degrees.

    Args:
        timing: stage/camera timing (default :class:`TimingModel`, continuous tilting).
        dose_e_per_A2: dose per frame (scalar or (N,)); None gives noise-free frames.
        blur: average over the angle swept during each exposure (continuous timing only), with
            ``blur_substeps`` sub-angles (default: one per 0.5 degree swept, 1 … 8).
        drift_px_per_s, jitter_px: specimen drift speed and white jitter (pixels), see
            :func:`~tiltstream.sim.noise.drift_shifts`.
        axis_offset_px: tilt-axis offset (pixels).
        rng: random generator; required when dose, drift or jitter is set.

    Returns:
        a :class:`SimulatedSeries` with frames (N, Y, X).
    """
    timing = TimingModel() if timing is None else timing
    noisy = dose_e_per_A2 is not None
    if (noisy or drift_px_per_s > 0 or jitter_px > 0) and not isinstance(rng, np.random.Generator):
        raise ValueError("rng (a numpy.random.Generator) is required for noise, drift or jitter")
    angles = tilt_scheme(scheme, n_frames, lo=lo, hi=hi)
    _, mid, exposure = timing.times(angles)
    speeds = timing.tilt_speeds(angles)
    if blur_substeps is None:
        blur_substeps = default_blur_substeps(speeds, exposure)
    substeps = int(blur_substeps) if blur and timing.continuous else 1
    if mid.size and mid[-1] > phantom.duration_s:
        log.info("series lasts %.1f s, longer than the phantom's %.1f s process", mid[-1], phantom.duration_s)
    shifts = specimen_shifts(mid, drift_px_per_s=drift_px_per_s, jitter_px=jitter_px, rng=rng)
    dose = None if not noisy else np.broadcast_to(np.asarray(dose_e_per_A2, dtype=np.float64), (angles.size,))
    frames = render_frames(phantom, angles, mid, exposure, speeds, shifts, exponent=exponent, blur_substeps=substeps,
                           supersample=supersample, axis_offset_px=axis_offset_px, dose_e_per_A2=dose,
                           scatter_per_nm=scatter_per_nm, rng=rng)
    cumulative = None if dose is None else np.cumsum(dose)
    metadata = {
        "scheme": scheme,
        "tilt_range_deg": (float(lo), float(hi)),
        "timing": dataclasses.asdict(timing),
        "phantom": phantom.name,
        "phantom_shape_zyx": tuple(phantom.shape),
        "voxel_nm": phantom.voxel_nm,
        "duration_s": phantom.duration_s,
        "supersample": int(supersample),
        "blur_substeps": substeps,
        "drift_px_per_s": float(drift_px_per_s),
        "jitter_px": float(jitter_px),
        "scatter_per_nm": float(scatter_per_nm) if noisy else None,
        "units": "frames: line integrals of contrast (pure gold = 1) in voxel lengths",
        "geometry": "u = x cos(theta) + z sin(theta); j = u + (U-1)/2 + axis_offset_px + du",
    }
    return SimulatedSeries(
        frames=frames,
        angles_deg=angles,
        times_s=mid,
        exposure_s=exposure,
        pixel_nm=phantom.voxel_nm,
        dose_e_per_A2=cumulative,
        shifts_px=shifts,
        axis_offset_px=float(axis_offset_px),
        phantom=phantom,
        exponent=float(exponent),
        metadata=metadata,
    )
