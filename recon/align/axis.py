"""Direction of the tilt axis in the image plane, including a tilt axis that runs along the columns.

Only with frames summed exactly across the true tilt axis do the profiles of all tilt angles agree
(:mod:`.profiles`); summed across a direction rotated by φ, each profile mixes in a different part
of the particle at every tilt angle. The axis direction is found by minimising the disagreement of
the drift-corrected profiles over the in-plane angle: a coarse scan, then a bounded scalar
minimisation. The drift along the axis is re-estimated at every trial angle, so the search is
not fooled by drift; each frame is compared with the frames acquired just before and after it, so
a particle that changes shape slowly does not bias it either.

A quarter turn (tilt axis along the columns: frames taken with the axis horizontal) is searched
by running the same scan for both orientations. Profiles alone cannot always tell the two apart: a
particle nearly symmetric about the tilt axis (a needle turning about its own length) has
invariant profiles both along and across it. :func:`~.pipeline.align_series` therefore keeps the
orientation whose drift-corrected frames are the more consistent with one reconstruction
(:func:`estimate_axis_offset` with ``full_output``). ±90° (and 0°/180°) cannot be told apart from
projections alone: they differ by a mirror image of the volume, so +90° is reported.

The tilt-axis offset (:func:`estimate_axis_offset`) is the axis position whose SIRT reconstruction
reproduces the frames best.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import minimize_scalar

from tiltstream.recon.align.profiles import align_profiles, axis_profiles, profile_residual
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator
from tiltstream.recon.sirt import sirt, sirt_weights

__all__ = [
    "AxisDirection",
    "estimate_axis_direction",
    "estimate_axis_offset",
    "shift_columns",
    "row_energy",
    "signal_rows",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AxisDirection:
    """The estimated in-plane tilt-axis angle.

    tilt_axis_angle_deg : total angle in the stored frames (IMOD convention, see
        :mod:`tiltstream.stream.orient`), = 90·quarter_turns + residual_deg.
    quarter_turns : 0 (axis along the rows) or 1 (along the columns).
    residual_deg : the small rotation on top of the quarter turns.
    residual : profile disagreement at the optimum (0 = perfect agreement).
    scores : {quarter_turns: profile residual at its best angle} for each orientation tried.
    candidates : {quarter_turns: best total angle} for each orientation tried.
    """

    tilt_axis_angle_deg: float
    quarter_turns: int
    residual_deg: float
    residual: float
    scores: dict[int, float]
    candidates: dict[int, float]


def _score(frames: np.ndarray, angle_deg: float, order: np.ndarray) -> float:
    _, aligned = align_profiles(axis_profiles(frames, angle_deg), iterations=2)
    return profile_residual(aligned, order)


def estimate_axis_direction(
    frames: np.ndarray,
    *,
    order: np.ndarray | None = None,
    search_deg: float = 10.0,
    step_deg: float = 1.0,
    tol_deg: float = 0.01,
    detect_quarter_turn: bool = True,
    initial_deg: float = 0.0,
) -> AxisDirection:
    """Estimate the in-plane tilt-axis angle of a tilt series.

    Parameters
    ----------
    frames : (N, Y, X) background-free frames as stored (dark-field contrast).
    order : acquisition order of the frames (indices, first acquired first); default: as given.
    search_deg : the residual angle is searched within ±search_deg of each orientation.
    step_deg : coarse scan step.
    tol_deg : precision of the refinement.
    detect_quarter_turn : also try the axis along the columns and keep the better orientation.
    initial_deg : known approximate angle (e.g. from the file); the search is centred on it and
        ``detect_quarter_turn`` then also tries ``initial_deg + 90``.

    Returns
    -------
    :class:`AxisDirection`.
    """
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 3 or f.shape[0] < 3:
        raise ValueError(f"frames: expected (N, Y, X) with N ≥ 3, got shape {f.shape}")
    n = f.shape[0]
    order = np.arange(n) if order is None else np.asarray(order, dtype=np.int64)
    if sorted(order.tolist()) != list(range(n)):
        raise ValueError(f"order: expected a permutation of 0..{n - 1}, got {order[:10].tolist()}…")
    base_k = int(np.round(initial_deg / 90.0))
    candidates = [base_k, base_k + 1] if detect_quarter_turn else [base_k]
    best: tuple[float, int, float] | None = None
    scores: dict[int, float] = {}
    found: dict[int, float] = {}
    grid = np.arange(-search_deg, search_deg + 1e-9, step_deg)
    for k in candidates:
        oriented = np.rot90(f, k=k % 4, axes=(1, 2))
        centre = float(initial_deg - 90.0 * base_k) if k == base_k else 0.0
        trial = centre + grid
        s = np.array([_score(oriented, a, order) for a in trial])
        j = int(np.argmin(s))
        lo = trial[max(j - 1, 0)]
        hi = trial[min(j + 1, len(trial) - 1)]
        res = minimize_scalar(lambda a: _score(oriented, a, order), bounds=(lo, hi), method="bounded",
                              options={"xatol": tol_deg})
        a_best, s_best = (float(res.x), float(res.fun)) if res.fun <= s[j] else (float(trial[j]), float(s[j]))
        scores[k % 4] = s_best
        found[k % 4] = 90.0 * k + a_best
        log.debug("axis orientation %d×90°: residual angle %.3f°, profile residual %.3g", k, a_best, s_best)
        if best is None or s_best < best[0]:
            best = (s_best, k, a_best)
    s_best, k, a_best = best
    return AxisDirection(tilt_axis_angle_deg=90.0 * k + a_best, quarter_turns=k % 4, residual_deg=a_best,
                         residual=s_best, scores=scores, candidates=found)


def row_energy(frames: np.ndarray) -> np.ndarray:
    """(Y,) signal energy of each row of frames (N, Y, U), summed over frames and columns."""
    return np.sum(np.asarray(frames, dtype=np.float64) ** 2, axis=(0, 2))


def signal_rows(energy: np.ndarray, max_rows: int) -> np.ndarray:
    """Indices of at most ``max_rows`` rows, evenly spread over the rows that carry signal (energy
    over 5 % of the strongest row's), from their :func:`row_energy`."""
    rows = np.flatnonzero(energy > 0.05 * energy.max()) if energy.max() > 0 else np.arange(energy.size)
    if rows.size > max_rows:
        rows = rows[np.linspace(0, rows.size - 1, max_rows).round().astype(int)]
    return rows


def shift_columns(frames: np.ndarray, shift_px: float) -> np.ndarray:
    """Frames (N, Y, U) moved by ``shift_px`` along U with the Fourier shift theorem (periodic, exact
    for band-limited data): used to try tilt-axis positions without rebuilding a projector."""
    f = np.asarray(frames, dtype=np.float64)
    nu = f.shape[-1]
    phase = np.exp(-2j * np.pi * np.fft.rfftfreq(nu) * float(shift_px))
    return np.fft.irfft(np.fft.rfft(f, axis=-1) * phase, n=nu, axis=-1).astype(np.float32)


_OPERATOR_CACHE: dict[tuple, list] = {}


def _operators(shape: tuple[int, int, int], angles: np.ndarray, groups: list[np.ndarray], device: str) -> list:
    """(projector, SIRT weights) per group, axis at the detector centre, volume as thick as the frames
    are wide; the last few sets are kept, as the searches ask for the same geometry again and again."""
    _, ny, nu = shape
    key = (ny, nu, str(device), angles.tobytes(), tuple(g.tobytes() for g in groups))
    if key not in _OPERATOR_CACHE:
        vol = VolumeGeometry((nu, ny, nu))
        ops = []
        for g in groups:
            a = operator(vol, ProjectionGeometry(angles[g], (ny, nu)), device=device)
            ops.append((a, sirt_weights(a)))
        while len(_OPERATOR_CACHE) >= 4:
            _OPERATOR_CACHE.pop(next(iter(_OPERATOR_CACHE)))
        _OPERATOR_CACHE[key] = ops
    return _OPERATOR_CACHE[key]


def estimate_axis_offset(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    *,
    initial_px: float = 0.0,
    search_px: float = 4.0,
    tol_px: float = 0.02,
    max_rows: int = 16,
    iterations: int = 20,
    device: str = "cpu",
    groups: list[np.ndarray] | None = None,
    full_output: bool = False,
) -> float | tuple[float, float]:
    """Tilt-axis offset (pixels right of the detector centre) that makes the frames most consistent.

    Minimises the NRMSE between the frames and the reprojection of their SIRT reconstruction over
    ``initial_px ± search_px`` (bounded Brent search) on at most ``max_rows`` evenly spread rows that
    carry signal (each row is its own 2-D problem, so a few rows see the axis as well as all of them
    do, at a fraction of the cost). For each trial offset the frames are moved so that the axis sits
    at the detector centre, where the projectors (built once) have it.

    Parameters
    ----------
    frames : (N, Y, U) drift-corrected, background-free frames with the tilt axis along the rows.
    angles_deg : (N,) tilt angles.
    groups : frames reconstructed together (e.g. time windows of a changing particle; each group on
        its own, the residuals pooled); default all.
    full_output : also return the residual (NRMSE) at the optimum.
    """
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 3:
        raise ValueError(f"frames: expected (N, Y, U), got shape {f.shape}")
    f = f[:, signal_rows(row_energy(f), max_rows), :]
    groups = [np.arange(f.shape[0])] if groups is None else [np.asarray(g) for g in groups]
    ops = _operators(f.shape, np.asarray(angles_deg, dtype=np.float64), groups, device)

    def residual(axis_offset_px: float) -> float:
        moved = shift_columns(f, -axis_offset_px)
        res2 = norm2 = 0.0
        for g, (a, weights) in zip(groups, ops):
            y = torch.as_tensor(moved[g], device=a.device)
            x = sirt(a, y, iterations, weights=weights)
            res2 += float(torch.sum((a(x) - y) ** 2))
            norm2 += float(torch.sum(y**2))
        return float(np.sqrt(res2 / (norm2 + 1e-30)))

    res = minimize_scalar(residual, bounds=(initial_px - search_px, initial_px + search_px), method="bounded",
                          options={"xatol": tol_px})
    log.debug("axis offset %.3f px (residual %.4f, %d evaluations)", res.x, res.fun, res.nfev)
    return (float(res.x), float(res.fun)) if full_output else float(res.x)
