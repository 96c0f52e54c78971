"""In-plane tilt-axis angle from the tilt-axis position at several heights along the axis.

The profiles of :mod:`.axis` find the direction of the tilt axis precisely on clean projections, but
real detector data can mislead them (contrast that changes with tilt, a specimen that runs out of
the field of view along the axis, a particle nearly symmetric about it). Here the direction is
measured with the criterion that places the axis: if the axis in the aligned frames is turned by δ
from the rows, the axis position across the frame changes linearly along it, ``offset + r·tan δ``
at height r. The offset is measured on its own in bands of rows (:func:`~.axis.estimate_axis_offset`:
the position whose reconstruction reproduces those rows best; every row is its own 2-D problem),
and a straight line through the band offsets gives δ and its standard error
(:func:`axis_angle_from_bands`). It needs no particular shape (unlike a centre-of-mass fit, which
needs one isolated particle) and no profile that stays the same at every tilt, and it is not biased
by the object's orientation, as a whole-series consistency score is (its error from sparse angles
itself changes when the frames are turned; on a small simulated rod that moved its minimum by 1°).

Drifts are estimated at one angle; at another they are the same physical motion seen in a frame
rotated by the difference (:func:`carry_alignment`). What is rotated is where the specimen *is* in
each frame, not only its drift: at a wrong angle δ a specimen whose centre of mass sits at column
c(θ) is seen moved by δ·c(θ) along the axis, and the drift estimates absorb that pattern; carried
as a drift it would hold the frames at the angle it was estimated at. So the drifts are carried
together with the specimen's trajectory (:func:`specimen_track`: its mean row and the sinusoid of
its column), and the trajectory's own parts are split off again at the new angle
(:func:`~.drift.split_gauge`). Drift estimates adapt a little to a wrong angle, so
:func:`~.pipeline.align_series` alternates this estimate with projection matching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tiltstream.recon.align.axis import estimate_axis_offset, row_energy, signal_rows
from tiltstream.recon.align.drift import gauge_basis, split_gauge
from tiltstream.recon.align.matching import bin_frames
from tiltstream.recon.align.transform import rotation_matrix_rc

__all__ = ["RotationParams", "axis_angle_from_bands", "rotate_shifts", "specimen_track", "carry_alignment"]


@dataclass(frozen=True)
class RotationParams:
    """Settings of the band estimate of the in-plane angle.

    n_bands : bands of rows (with signal) whose axis offsets are measured.
    max_size : frames are binned by the smallest integer factor that brings both edges ≤ this.
    search_px : half-width of each band's offset search around the current offset, full pixels.
    max_rounds : most estimate / projection-matching rounds in :func:`~.pipeline.align_series`.
    tol_deg : the rounds stop when the angle moves less than this (or than twice its standard error).
    agree_deg, agree_sigmas : where the tilt-axis profiles gave a trusted angle, the band estimate
        replaces it only if they differ by more than ``agree_deg`` and by more than
        ``agree_sigmas`` standard errors (on clean data the profiles are the more precise of the two).
    """

    n_bands: int = 4
    max_size: int = 128
    search_px: float = 4.0
    max_rounds: int = 3
    tol_deg: float = 0.05
    agree_deg: float = 0.5
    agree_sigmas: float = 3.0

    def __post_init__(self) -> None:
        if self.n_bands < 2 or self.max_size < 16 or self.max_rounds < 1:
            raise ValueError(f"n_bands ≥ 2, max_size ≥ 16, max_rounds ≥ 1 expected, got {self.n_bands}, "
                             f"{self.max_size}, {self.max_rounds}")
        for name in ("search_px", "tol_deg", "agree_deg", "agree_sigmas"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive number, got {v}")


def rotate_shifts(shifts_px: np.ndarray, delta_deg: float) -> np.ndarray:
    """Drifts (N, 2) (dy, du) estimated with the tilt axis at angle a, expressed at a + ``delta_deg``.

    The same motion of the frame content in the stored frames, seen in an output frame turned by
    ``delta_deg`` more (see :func:`~.transform.rotation_matrix_rc`: M(a + δ)ᵀ M(a) = M(−δ)).
    """
    return np.asarray(shifts_px, dtype=np.float64) @ rotation_matrix_rc(-float(delta_deg)).T


def specimen_track(frames: np.ndarray, angles_deg: np.ndarray) -> np.ndarray:
    """(N, 2) where the specimen is in each aligned, drift-corrected frame (N, Y, U): (row, col) px
    from the frame centre, as the trajectory of one point (its centre of mass): the mean row, and in
    the columns the sinusoid ``o + x₀·cosθ + z₀·sinθ`` fitted to the per-frame centres of mass.
    Background-free frames; negative values are ignored.
    """
    aligned = np.clip(np.asarray(frames, dtype=np.float32), 0.0, None)
    mass = aligned.sum(axis=(1, 2), dtype=np.float64)
    n, ny, nu = aligned.shape
    if np.any(mass <= 0):
        return np.zeros((n, 2))
    rows = (aligned.sum(axis=2, dtype=np.float64) @ (np.arange(ny) - (ny - 1) / 2)) / mass
    cols = (aligned.sum(axis=1, dtype=np.float64) @ (np.arange(nu) - (nu - 1) / 2)) / mass
    basis = gauge_basis(np.asarray(angles_deg, dtype=np.float64))
    coef, *_ = np.linalg.lstsq(basis, cols, rcond=None)
    return np.stack([np.full(n, rows.mean()), basis @ coef], axis=1)


def carry_alignment(shifts_px: np.ndarray, axis_offset_px: float, track_px: np.ndarray, angles_deg: np.ndarray,
                    delta_deg: float) -> tuple[np.ndarray, float]:
    """Drifts and axis offset estimated at angle a, carried to a + ``delta_deg``.

    The specimen's positions (``track_px`` + drift) are rotated with the frame; the result is split
    again into a trajectory (the specimen's place in the volume, whose constant column part moves
    with the tilt axis) and gauge-free drifts. Returns (shifts (N, 2), axis_offset_px).
    """
    track = np.asarray(track_px, dtype=np.float64)
    before = split_gauge(track, angles_deg)[1]
    moved, const, _ = split_gauge(rotate_shifts(np.asarray(shifts_px, dtype=np.float64) + track, delta_deg),
                                  angles_deg)
    return moved, float(axis_offset_px) + const - before


def axis_angle_from_bands(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    *,
    axis_offset_px: float,
    groups: list[np.ndarray] | None = None,
    params: RotationParams | None = None,
) -> tuple[float, float, dict]:
    """How far the tilt axis of aligned frames is turned from the rows, from band offsets.

    Parameters
    ----------
    frames : (N, Y, U) background-free, drift-corrected frames with the tilt axis along the rows
        (as near as known).
    angles_deg : (N,) tilt angles.
    axis_offset_px : the current tilt-axis offset, full pixels right of the centre.
    groups : time windows of a changing particle (each band reconstructs each window on its own).
    params : :class:`RotationParams`.

    Returns
    -------
    (delta_deg, stderr_deg, info): add ``delta_deg`` to the in-plane angle the frames were turned by
    (IMOD convention, :mod:`tiltstream.stream.orient`); ``stderr_deg`` from the scatter of the band
    offsets about the line (inf with two bands); info holds the band heights and offsets (full px).
    """
    p = params or RotationParams()
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 3:
        raise ValueError(f"frames: expected (N, Y, U), got shape {f.shape}")
    factor = max(1, math.ceil(max(f.shape[1:]) / p.max_size))
    fb, centre_shift = bin_frames(f, factor)
    energy = row_energy(fb)
    rows = signal_rows(energy, fb.shape[1])
    if rows.size < 2 * p.n_bands:
        raise ValueError(f"frames: expected at least {2 * p.n_bands} rows with signal for {p.n_bands} bands, "
                         f"got {rows.size}")
    heights, offsets = [], []
    start = (axis_offset_px - centre_shift) / factor
    for band in np.array_split(rows, p.n_bands):
        o = estimate_axis_offset(fb[:, band, :], angles_deg, initial_px=start, search_px=p.search_px / factor,
                                 tol_px=0.02, groups=groups)
        # the offset fits the band's rows in proportion to their signal: that is its height
        heights.append(float(np.average(band, weights=energy[band])) - (fb.shape[1] - 1) / 2)
        offsets.append(float(o))
    r, o = np.array(heights), np.array(offsets)
    (slope, _), cov = np.polyfit(r, o, 1, cov=True) if r.size > 3 else (np.polyfit(r, o, 1), None)
    stderr = math.inf if cov is None else math.degrees(math.sqrt(max(float(cov[0, 0]), 0.0)))
    # the axis at height r sits at offset + r·slope: it is turned by +atan(slope) in (row, col)
    # index units, which the in-plane angle (counter-clockwise) takes back
    delta = -math.degrees(math.atan(slope))
    info = {"band_heights_px": (r * factor).tolist(), "band_offsets_px": (o * factor + centre_shift).tolist(),
            "delta_deg": delta, "stderr_deg": stderr, "binning": factor}
    return delta, stderr, info


