"""Projection matching: alternate a reconstruction and a per-frame shift refinement until converged.

Each round corrects the frames with the current drifts, reconstructs them (the project's SIRT, on a
binned copy for speed), reprojects the reconstruction at every frame's angle and measures each
frame's residual shift against its own reprojection (:func:`~.drift.reference_drift`). The shifts
are updated and their unmeasurable part is dropped (:func:`~.drift.split_gauge`: a constant du is
the tilt axis, cosθ/sinθ parts only move the particle in the volume). The tilt-axis offset itself
(the geometry's ``axis_offset_px``; frames are not moved for it) is re-estimated every round as the
offset whose reconstruction reproduces the frames best (:func:`~.axis.estimate_axis_offset`):
SIRT adapts to a wrong axis, so matching shifts alone would only creep towards it. Rounds stop when
the largest update of a shift or of the offset is below ``tol_px``.

With ``time_window_frames`` each frame is matched against a reconstruction from the frames acquired
around it (the series is cut into chunks in time, each reconstructed from a window of frames), so a
particle that changes shape during the series is compared with itself as it was, not with an
average of all its shapes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import ndimage

from tiltstream.recon.align.axis import estimate_axis_offset
from tiltstream.recon.align.drift import reference_drift, split_gauge
from tiltstream.recon.align.xcorr import RegistrationFilter
from tiltstream.recon.binning import block_mean, centre_shift_px
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator
from tiltstream.recon.sirt import sirt, sirt_weights

__all__ = ["MatchingParams", "MatchingResult", "projection_matching", "shift_frames", "bin_frames"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchingParams:
    """Projection-matching settings.

    max_rounds : most reconstruct/re-register rounds.
    tol_px : stop when the largest per-frame shift update (full-resolution pixels) is below this.
    max_size : frames are binned by the smallest integer factor that brings both edges ≤ this.
    iterations : SIRT iterations in the first round (later rounds are warm-started with half).
    refine_offset : re-estimate the tilt-axis offset every round (:func:`~.axis.estimate_axis_offset`),
        first within ±offset_search_px of the starting value, then ever more narrowly.
    offset_search_px : half-width of the first offset search, full-resolution pixels.
    time_window_frames : match each frame against a reconstruction from this many frames around it
        in time (for a particle that changes during the series); None: all frames (static).
    vol_z : reconstruction thickness along the beam in binned voxels (None: the binned frame width).
    filt : registration settings (None: defaults suited to the binned frames).
    device : torch device for the reconstruction.
    """

    max_rounds: int = 8
    tol_px: float = 0.1
    max_size: int = 96
    iterations: int = 30
    refine_offset: bool = True
    offset_search_px: float = 4.0
    time_window_frames: int | None = None
    vol_z: int | None = None
    filt: RegistrationFilter | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.max_rounds < 1 or self.iterations < 1 or self.max_size < 8:
            raise ValueError(
                f"max_rounds, iterations ≥ 1 and max_size ≥ 8 expected, got {self.max_rounds}, "
                f"{self.iterations}, {self.max_size}"
            )
        if not self.tol_px > 0:
            raise ValueError(f"tol_px: expected a positive tolerance in pixels, got {self.tol_px}")
        if self.time_window_frames is not None and self.time_window_frames < 4:
            raise ValueError(f"time_window_frames: expected ≥ 4 frames or None, got {self.time_window_frames}")


@dataclass
class MatchingResult:
    """shifts (N, 2) (dy, du) px; axis_offset_px; per-round largest update and reprojection NRMSE."""

    shifts_px: np.ndarray
    axis_offset_px: float
    rounds: int
    converged: bool
    max_update_px: list[float] = field(default_factory=list)
    reprojection_nrmse: list[float] = field(default_factory=list)
    binning: int = 1


def shift_frames(frames: np.ndarray, shifts_px: np.ndarray, *, order: int = 3) -> np.ndarray:
    """Frames (N, Y, U) each moved by ``−shifts_px[i]`` (drift removed), cubic spline, edges extended."""
    f = np.asarray(frames)
    out = np.empty(f.shape, dtype=np.float32)
    for i in range(f.shape[0]):
        if np.any(shifts_px[i]):
            out[i] = ndimage.shift(np.asarray(f[i], dtype=np.float64), -np.asarray(shifts_px[i]), order=order,
                                   mode="nearest")
        else:
            out[i] = f[i]
    return out


def bin_frames(frames: np.ndarray, factor: int) -> tuple[np.ndarray, float]:
    """Block-average frames (N, Y, U) by ``factor`` (:func:`~tiltstream.recon.binning.block_mean`).

    Returns the binned frames and the change of the column centre, in full pixels: a feature at
    ``c`` px right of the full frame's centre sits ``(c − centre_shift) / factor`` binned px right
    of the binned frame's centre.
    """
    f = np.asarray(frames, dtype=np.float32)
    return block_mean(f, factor, ndim=2), centre_shift_px(f.shape[2], factor)


class _Reprojector:
    """Reprojection of a SIRT reconstruction at every frame's angle, static or per time chunk.

    Frames come with the tilt axis at the detector centre, so the projectors never change and are
    built once; reconstructions are warm-started from the previous round.
    """

    def __init__(self, angles: np.ndarray, times: np.ndarray, shape: tuple[int, int, int], nz: int,
                 params: MatchingParams):
        n, nyb, nub = shape
        vol = VolumeGeometry((nz, nyb, nub))
        w = params.time_window_frames
        if w is None or w >= n:
            self.groups = [(np.arange(n), np.arange(n))]
        else:
            by_time = np.argsort(times, kind="stable")
            self.groups = []
            for members in np.array_split(by_time, max(1, math.ceil(2 * n / w))):
                centre = int(np.searchsorted(times[by_time], np.median(times[members])))
                lo = int(np.clip(centre - w // 2, 0, n - w))
                self.groups.append((members, np.sort(by_time[lo:lo + w])))
        self.ops = []
        for members, window in self.groups:
            a_w = operator(vol, ProjectionGeometry(angles[window], (nyb, nub)), device=params.device)
            same = np.array_equal(members, window)
            a_m = a_w if same else operator(vol, ProjectionGeometry(angles[members], (nyb, nub)), device=params.device)
            self.ops.append((a_w, sirt_weights(a_w), a_m))
        self.warm: list[torch.Tensor | None] = [None] * len(self.groups)

    def __call__(self, frames_b: np.ndarray, iterations: int) -> np.ndarray:
        out = np.empty_like(frames_b)
        for g, ((members, window), (a_w, weights, a_m)) in enumerate(zip(self.groups, self.ops)):
            x = sirt(a_w, torch.as_tensor(frames_b[window]), iterations, x_init=self.warm[g], weights=weights)
            self.warm[g] = x
            out[members] = a_m(x).cpu().numpy()
        return out


def projection_matching(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    *,
    shifts_px: np.ndarray | None = None,
    axis_offset_px: float = 0.0,
    times_s: np.ndarray | None = None,
    params: MatchingParams | None = None,
) -> MatchingResult:
    """Refine per-frame drifts (and the tilt-axis offset) by projection matching.

    Parameters
    ----------
    frames : (N, Y, U) background-free frames with the tilt axis along the rows.
    angles_deg : (N,) tilt angles.
    shifts_px : (N, 2) starting drifts (dy, du) in pixels (zeros by default).
    axis_offset_px : starting tilt-axis offset, pixels right of the detector centre.
    times_s : (N,) acquisition times (needed with ``time_window_frames``; default: frame index).
    params : :class:`MatchingParams`.

    Returns
    -------
    :class:`MatchingResult` with gauge-free drifts (:func:`~.drift.split_gauge`).
    """
    p = params or MatchingParams()
    f = np.asarray(frames, dtype=np.float32)
    if f.ndim != 3:
        raise ValueError(f"frames: expected (N, Y, U), got shape {f.shape}")
    n, ny, nu = f.shape
    angles = np.asarray(angles_deg, dtype=np.float64)
    times = np.arange(n, dtype=np.float64) if times_s is None else np.asarray(times_s, dtype=np.float64)
    shifts = np.zeros((n, 2)) if shifts_px is None else np.array(shifts_px, dtype=np.float64)
    if angles.shape != (n,) or times.shape != (n,) or shifts.shape != (n, 2):
        raise ValueError(
            f"expected {n} angles, {n} times and ({n}, 2) shifts for {n} frames, got {angles.shape}, "
            f"{times.shape}, {shifts.shape}"
        )
    factor = max(1, math.ceil(max(ny, nu) / p.max_size))
    filt = p.filt or RegistrationFilter(low_cut=0.02, high_cut=0.3, whiten=0.3, taper=0.1,
                                        upsample=max(20, 10 * factor), max_shift=max(4.0, 0.25 * min(ny, nu) / factor))
    shifts, const, _ = split_gauge(shifts, angles)
    offset = float(axis_offset_px) + const
    result = MatchingResult(shifts_px=shifts, axis_offset_px=offset, rounds=0, converged=False, binning=factor)
    reproject: _Reprojector | None = None
    search = p.offset_search_px
    for r in range(p.max_rounds):
        # the frames' content moved so that the tilt axis sits at the detector centre
        fb, _ = bin_frames(shift_frames(f, shifts + np.array([0.0, offset])), factor)
        offset_change = 0.0
        if p.refine_offset:
            offset_change = factor * estimate_axis_offset(fb, angles, search_px=search / factor,
                                                          tol_px=0.2 * p.tol_px / factor, device=p.device)
            offset += offset_change
            search = min(search, max(0.5, 4 * abs(offset_change)))
            fb, _ = bin_frames(shift_frames(f, shifts + np.array([0.0, offset])), factor)
        if reproject is None:
            reproject = _Reprojector(angles, times, fb.shape, p.vol_z or fb.shape[2], p)
        reproj = reproject(fb, p.iterations if r == 0 else max(5, p.iterations // 2))
        nrmse = float(np.linalg.norm(reproj - fb) / (np.linalg.norm(fb) + 1e-30))
        delta, _ = reference_drift(fb, reproj, filt)
        new, _, _ = split_gauge(shifts + delta * factor, angles)
        largest = max(float(np.max(np.abs(new - shifts))), abs(offset_change))
        shifts = new
        result.max_update_px.append(largest)
        result.reprojection_nrmse.append(nrmse)
        log.debug("projection matching round %d: largest update %.3f px, axis offset %.3f px, NRMSE %.4f", r + 1,
                  largest, offset, nrmse)
        result.rounds = r + 1
        if largest < p.tol_px:
            result.converged = True
            break
    result.shifts_px = shifts
    result.axis_offset_px = offset
    return result
