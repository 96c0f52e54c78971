"""Per-frame drift (dy, du) of a tilt series whose tilt axis runs along the rows.

Three estimators, each with its own strength:

* :func:`axis_drift` — dy from the tilt-axis profiles (:mod:`.profiles`), which are the same at
  every tilt angle: an absolute estimate (no error accumulates from frame to frame), insensitive to
  du, and to a particle whose mass is redistributed symmetrically.
* :func:`centre_of_mass_drift` — du from the centre of mass across the axis, which for a particle
  whose centre of mass sits at (x₀, z₀) follows ``x₀·cosθ + z₀·sinθ + axis offset`` exactly: the
  residual of that sinusoid fit is the drift. Absolute too, unaffected by any mass-conserving shape
  change, but sensitive to anything else entering the field of view.
* :func:`neighbour_drift` — sub-pixel cross-correlation of each frame with its neighbours *in
  angle* (sorted by angle, not time: golden-ratio frames jump across the range), chained into a
  cumulative drift; robust to clutter, but its error grows along the chain.
* :func:`reference_drift` — each frame against its own reference (a reprojection of the current
  reconstruction in projection matching, or live).

What cannot be measured (:func:`split_gauge`): a common dy and the du components along
``cosθ`` and ``sinθ`` are translations of the particle in the volume, and the constant part of du
is the tilt-axis offset. Drifts are reported without them; the constant goes into the geometry.
"""

from __future__ import annotations

import logging

import numpy as np

from tiltstream.recon.align.profiles import align_profiles, axis_profiles
from tiltstream.recon.align.xcorr import RegistrationFilter, prepare, register, register_spectra

__all__ = [
    "axis_drift",
    "centre_of_mass_drift",
    "neighbour_drift",
    "reference_drift",
    "split_gauge",
    "gauge_basis",
]

log = logging.getLogger(__name__)


def gauge_basis(angles_deg: np.ndarray) -> np.ndarray:
    """(N, 3) columns 1, cosθ, sinθ: the du patterns that a translated particle or a moved axis make."""
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    return np.stack([np.ones_like(a), np.cos(a), np.sin(a)], axis=1)


def split_gauge(shifts: np.ndarray, angles_deg: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Split drifts into what is measurable and what is not.

    Parameters
    ----------
    shifts : (N, 2) drifts (dy, du) in pixels.
    angles_deg : (N,) tilt angles.

    Returns
    -------
    shifts : (N, 2) with mean dy = 0 and du orthogonal to 1, cosθ and sinθ.
    axis_offset : the constant part of du (the tilt axis sits this far right of where assumed).
    centre : (x₀, z₀) the particle's displacement from the volume centre implied by du.
    """
    s = np.array(shifts, dtype=np.float64)
    b = gauge_basis(angles_deg)
    coef, *_ = np.linalg.lstsq(b, s[:, 1], rcond=None)
    s[:, 1] -= b @ coef
    s[:, 0] -= s[:, 0].mean()
    return s, float(coef[0]), coef[1:].copy()


def axis_drift(frames: np.ndarray) -> np.ndarray:
    """(N,) drift dy along the tilt axis (rows) from the tilt-axis profiles, zero mean."""
    return align_profiles(axis_profiles(frames), iterations=3)[0]


def centre_of_mass_drift(frames: np.ndarray, angles_deg: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """du from the centre of mass across the tilt axis.

    Parameters
    ----------
    frames : (N, Y, U) background-free frames, tilt axis along the rows.
    angles_deg : (N,) tilt angles.

    Returns
    -------
    du : (N,) drift across the axis in pixels (gauge removed, see :func:`split_gauge`).
    axis_offset : where the tilt axis projects, pixels right of the detector centre.
    centre : (x₀, z₀) of the particle's centre of mass relative to the axis, in pixels.
    """
    f = np.asarray(frames, dtype=np.float64)
    mass = f.sum(axis=(1, 2))
    if np.any(mass <= 0):
        bad = np.flatnonzero(mass <= 0)[:10].tolist()
        raise ValueError(f"frames: expected positive total intensity for a centre of mass, got ≤ 0 in frame(s) {bad}")
    u = np.arange(f.shape[2]) - (f.shape[2] - 1) / 2
    com = (f.sum(axis=1) @ u) / mass
    shifts = np.stack([np.zeros_like(com), com], axis=1)
    s, offset, centre = split_gauge(shifts, angles_deg)
    return s[:, 1], offset, centre


def reference_drift(
    frames: np.ndarray,
    references: np.ndarray,
    filt: RegistrationFilter | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2) drift of each frame relative to its reference (same shapes), and the (N,) peak qualities."""
    f = np.asarray(frames)
    r = np.asarray(references)
    if f.shape != r.shape or f.ndim != 3:
        raise ValueError(f"frames, references: expected two (N, Y, U) stacks of one shape, got {f.shape} and {r.shape}")
    out = np.zeros((f.shape[0], 2))
    quality = np.zeros(f.shape[0])
    for i in range(f.shape[0]):
        out[i], quality[i] = register(r[i], f[i], filt)
    return out, quality


def neighbour_drift(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    filt: RegistrationFilter | None = None,
    *,
    max_gap_deg: float = 15.0,
) -> np.ndarray:
    """(N, 2) cumulative drift from chaining the shifts between neighbours in angle.

    Frames are sorted by angle; each is correlated with the previous one and the shifts are summed
    outwards from the frame nearest 0°. A gap larger than ``max_gap_deg`` is not bridged (the
    shift across it is taken as 0 and logged).
    """
    f = np.asarray(frames)
    angles = np.asarray(angles_deg, dtype=np.float64)
    order = np.argsort(angles, kind="stable")
    filt = filt or RegistrationFilter()
    steps = np.zeros((len(order), 2))
    spec_prev = prepare(f[order[0]], filt)
    for j in range(1, len(order)):
        spec = prepare(f[order[j]], filt)
        gap = angles[order[j]] - angles[order[j - 1]]
        if gap > max_gap_deg:
            log.warning("angle gap %.1f° between %.1f° and %.1f°: drift not chained across it", gap,
                        angles[order[j - 1]], angles[order[j]])
        else:
            steps[j] = register_spectra(spec_prev, spec, filt)[0]
        spec_prev = spec
    cum = np.cumsum(steps, axis=0)
    cum -= cum[int(np.argmin(np.abs(angles[order])))]
    out = np.empty_like(cum)
    out[order] = cum
    return out
