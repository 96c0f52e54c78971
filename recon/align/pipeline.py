"""Offline alignment of a whole tilt series: normalise, find the tilt axis, correct drift, refine.

:func:`align_series` runs, in order:

1. per-frame background/gain normalisation (:mod:`.normalize`);
2. the in-plane tilt-axis direction (:mod:`.axis`): tilt-axis profiles give a precise angle for
   each orientation (axis along the rows or the columns); the orientation is the one whose
   drift-corrected frames one reconstruction fits best (per time window for a changing particle),
   and the profile angle is kept only if it fits at least as well as that orientation's plain
   angle and is not at the edge of the search (on real data a wrong direction can look better to
   the profiles); it is then refined on frames centred by their coarse drift;
3. coarse drift: dy from the tilt-axis profiles, du from the centre of mass (or from chained
   neighbour correlations in angle order), and the tilt-axis offset (:mod:`.drift`);
4. projection matching (:mod:`.matching`), against reconstructions from time windows when the
   frames of a short time span cover the tilt range (golden-ratio acquisition), so a particle
   that changes shape is matched against itself as it was at that time;
5. the in-plane angle checked against the tilt-axis offsets of bands of rows (:mod:`.rotation`),
   alternating with projection matching: it decides where the profile estimate was not trusted
   (on real data: a needle that runs out of the field of view), and overrides a trusted one only
   where the two clearly disagree.

The result, :class:`Alignment`, is geometry plus per-frame corrections; :meth:`Alignment.apply`
resamples frames once (rotation and shifts together), and the tilt-axis offset stays in the
geometry unless ``centre_axis`` asks to move the frames instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import ndimage

from tiltstream.recon.align.axis import estimate_axis_direction, estimate_axis_offset
from tiltstream.recon.align.drift import axis_drift, centre_of_mass_drift, neighbour_drift, split_gauge
from tiltstream.recon.align.matching import MatchingParams, bin_frames, projection_matching
from tiltstream.recon.align.normalize import Normalization, normalize_frames
from tiltstream.recon.align.rotation import RotationParams, axis_angle_from_bands, carry_alignment, specimen_track
from tiltstream.recon.align.transform import oriented_shape, transform_frames
from tiltstream.stream.series import check_finite_frames

__all__ = ["AlignParams", "Alignment", "align_series", "apply_alignment", "is_interleaved", "validate_series"]

log = logging.getLogger(__name__)

COARSE = ("com", "neighbours", "none")


@dataclass(frozen=True)
class AlignParams:
    """What :func:`align_series` does.

    normalize : subtract each frame's background (and with ``scale="mass"`` its gain variation).
    scale : ``"mass"`` or ``"none"`` (see :func:`~.normalize.normalize_frames`).
    tilt_axis_angle_deg : the in-plane tilt-axis angle of the frames if known (IMOD convention);
        None: start from 0.
    estimate_rotation : refine the tilt-axis direction within ±rotation_search_deg of the start.
    refine_rotation : then check it against the tilt-axis offsets of bands of rows, alternating with
        projection matching (:mod:`.rotation`; ``rotation_params``): decides where the profile
        estimate was not trusted, overrides it where the two clearly disagree.
    detect_quarter_turn : also try the axis along the columns (when the file does not say).
    rotation_search_deg : half-width of the in-plane angle search.
    coarse : first drift estimate across the axis: ``"com"`` (centre of mass: an isolated particle),
        ``"neighbours"`` (chained correlation in angle order: cluttered fields) or ``"none"``.
    offset_search_px : half-width of the tilt-axis offset search around the coarse estimate.
    search_size : the axis direction and offset searches run on frames binned to at most this edge.
    matching : refine drifts and axis offset by projection matching.
    dynamic : match against time-window reconstructions; None: when the acquisition interleaves
        angles (any ``window_frames`` consecutive frames span ≥ 75 % of the tilt range).
    window_frames : frames per time window for ``dynamic``.
    matching_params : projection-matching settings (its ``time_window_frames`` is set from
        ``dynamic``/``window_frames``).
    rotation_params : settings of ``refine_rotation``.
    """

    normalize: bool = True
    scale: str = "mass"
    tilt_axis_angle_deg: float | None = None
    estimate_rotation: bool = True
    detect_quarter_turn: bool = True
    rotation_search_deg: float = 10.0
    coarse: str = "com"
    offset_search_px: float = 8.0
    search_size: int = 128
    matching: bool = True
    dynamic: bool | None = None
    window_frames: int = 24
    matching_params: MatchingParams = field(default_factory=MatchingParams)
    refine_rotation: bool = True
    rotation_params: RotationParams = field(default_factory=RotationParams)

    def __post_init__(self) -> None:
        if self.coarse not in COARSE:
            raise ValueError(f"coarse: expected one of {COARSE}, got {self.coarse!r}")
        if not (0 < self.rotation_search_deg <= 45):
            raise ValueError(f"rotation_search_deg: expected 0 < angle ≤ 45, got {self.rotation_search_deg}")
        if self.window_frames < 4:
            raise ValueError(f"window_frames: expected ≥ 4, got {self.window_frames}")
        if self.tilt_axis_angle_deg is not None and not np.isfinite(self.tilt_axis_angle_deg):
            raise ValueError(f"tilt_axis_angle_deg: expected a finite angle or None, got {self.tilt_axis_angle_deg}")


@dataclass
class Alignment:
    """An estimated alignment of a tilt series.

    shifts_px : (N, 2) drift (dy, du) of each frame, pixels in aligned (tilt axis along rows)
        coordinates, without the unmeasurable part (mean dy = 0; du ⟂ 1, cosθ, sinθ).
    axis_offset_px : where the tilt axis projects in the aligned frames, px right of the centre.
    tilt_axis_angle_deg : in-plane tilt-axis angle of the input frames (IMOD convention).
    input_shape : (Y, X) of the input frames; frame_shape: (Y, U) of the aligned frames.
    normalization : per-frame offsets/scales applied first, or None.
    info : diagnostics (estimators used, residuals, matching history, timings).
    """

    shifts_px: np.ndarray
    axis_offset_px: float
    tilt_axis_angle_deg: float
    input_shape: tuple[int, int]
    frame_shape: tuple[int, int]
    normalization: Normalization | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.shifts_px.shape[0])

    def apply(self, frames: np.ndarray, *, centre_axis: bool = False, normalize: bool = True) -> np.ndarray:
        """Aligned frames (N, Y, U) float32: normalised, axis rotated onto the rows, drift removed,
        in one resampling. With ``centre_axis`` the frames are also moved so that the tilt axis is
        at the detector centre (then reconstruct with ``axis_offset_px = 0``)."""
        f = np.asarray(frames)
        if f.ndim != 3 or f.shape[0] != self.n_frames or tuple(f.shape[1:]) != tuple(self.input_shape):
            raise ValueError(f"frames: expected shape ({self.n_frames}, {self.input_shape[0]}, {self.input_shape[1]}), "
                             f"got {f.shape}")
        if normalize and self.normalization is not None:
            f = self.normalization.apply(f)
        shifts = self.shifts_px + (np.array([0.0, self.axis_offset_px]) if centre_axis else 0.0)
        return transform_frames(f, tilt_axis_angle_deg=self.tilt_axis_angle_deg, shifts_px=shifts)

    def to_metadata(self) -> dict[str, Any]:
        """A JSON-able description (per-frame arrays as lists)."""
        out: dict[str, Any] = {
            "format": "tiltstream-alignment/1",
            "shifts_px": np.round(self.shifts_px, 4).tolist(),
            "shift_axes": ["dy (along the tilt axis, rows)", "du (across it, columns)"],
            "axis_offset_px": round(float(self.axis_offset_px), 4),
            "tilt_axis_angle_deg": round(float(self.tilt_axis_angle_deg), 4),
            "input_shape": list(self.input_shape),
            "frame_shape": list(self.frame_shape),
        }
        if self.normalization is not None:
            out["background_offsets"] = self.normalization.offsets.tolist()
            out["intensity_scales"] = np.round(self.normalization.scales, 6).tolist()
        out["info"] = _jsonable(self.info)
        return out

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> "Alignment":
        """Inverse of :meth:`to_metadata`."""
        if meta.get("format") != "tiltstream-alignment/1":
            raise ValueError(
                f"alignment metadata: expected format 'tiltstream-alignment/1', got {meta.get('format')!r}"
            )
        norm = None
        if "background_offsets" in meta:
            norm = Normalization(np.asarray(meta["background_offsets"], dtype=np.float64),
                                 np.asarray(meta["intensity_scales"], dtype=np.float64))
        return cls(shifts_px=np.asarray(meta["shifts_px"], dtype=np.float64).reshape(-1, 2),
                   axis_offset_px=float(meta["axis_offset_px"]), tilt_axis_angle_deg=float(meta["tilt_axis_angle_deg"]),
                   input_shape=tuple(meta["input_shape"]), frame_shape=tuple(meta["frame_shape"]), normalization=norm,
                   info=dict(meta.get("info", {})))


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    return v


def validate_series(frames: Any, angles_deg: Any, times_s: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a series for alignment; return frames, angles (float64) and times (frame index if None).

    Raises ValueError naming what was expected and what was found.
    """
    f = np.asarray(frames)
    if f.ndim != 3:
        raise ValueError(f"frames: expected a 3-D array (N, Y, X), got shape {f.shape}")
    n = f.shape[0]
    if n < 3 or min(f.shape[1:]) < 8:
        raise ValueError(f"frames: expected at least 3 frames of at least 8×8 pixels, got shape {f.shape}")
    if not (np.issubdtype(f.dtype, np.integer) or np.issubdtype(f.dtype, np.floating)):
        raise ValueError(f"frames: expected real pixel values, got dtype {f.dtype}")
    check_finite_frames(f)
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    if angles.shape != (n,):
        raise ValueError(f"angles_deg: expected {n} angles (one per frame), got {angles.size}")
    if not np.isfinite(angles).all():
        where = np.flatnonzero(~np.isfinite(angles))[:10].tolist()
        raise ValueError(f"angles_deg: expected finite angles, got NaN/Inf at {where}")
    times = np.arange(n, dtype=np.float64) if times_s is None else np.asarray(times_s, dtype=np.float64).reshape(-1)
    if times.shape != (n,) or not np.isfinite(times).all():
        raise ValueError(f"times_s: expected {n} finite times (one per frame), got {times.size} values")
    return f, angles, times


def time_windows(times_s: np.ndarray, window_frames: int) -> list[np.ndarray]:
    """The frames cut into consecutive runs of about ``window_frames`` in acquisition order."""
    order = np.argsort(times_s, kind="stable")
    return [np.sort(c) for c in np.array_split(order, max(1, order.size // window_frames))]


def is_interleaved(angles_deg: np.ndarray, times_s: np.ndarray, window_frames: int) -> bool:
    """True when every run of ``window_frames`` consecutive frames (in time) spans ≥ 75 % of the
    tilt range, as in golden-ratio acquisition: then a time window is a usable tilt series."""
    a = np.asarray(angles_deg)[np.argsort(times_s, kind="stable")]
    if a.size < 2 * window_frames:
        return False
    full = float(a.max() - a.min())
    if full <= 0:
        return False
    starts = range(0, a.size - window_frames + 1, max(1, window_frames // 2))
    spans = [float(np.ptp(a[i:i + window_frames])) for i in starts]
    return min(spans) >= 0.75 * full


def align_series(
    frames: Any,
    angles_deg: Any = None,
    times_s: Any = None,
    *,
    params: AlignParams | None = None,
) -> Alignment:
    """Estimate the alignment of a tilt series.

    Parameters
    ----------
    frames : (N, Y, X) frames as stored (any real dtype), or a
        :class:`~tiltstream.stream.series.TiltSeries` (then angles and times come from it).
    angles_deg : (N,) tilt angles in degrees.
    times_s : (N,) acquisition times in s (default: frame index); used for the acquisition order.
    params : :class:`AlignParams`.

    Returns
    -------
    :class:`Alignment`.
    """
    p = params or AlignParams()
    if hasattr(frames, "frames") and hasattr(frames, "angles_deg"):
        frames, angles_deg, times_s = frames.frames, frames.angles_deg, frames.times_s
    if angles_deg is None:
        raise ValueError("angles_deg: expected one tilt angle per frame, got None")
    f, angles, times = validate_series(frames, angles_deg, times_s)
    order = np.argsort(times, kind="stable")
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    work, norm = normalize_frames(f, scale=p.scale) if p.normalize else (f.astype(np.float32), None)
    timings["normalize_s"] = time.perf_counter() - t0

    dynamic = is_interleaved(angles, times, p.window_frames) if p.dynamic is None else bool(p.dynamic)
    groups = time_windows(times, p.window_frames) if dynamic else None

    # -- tilt-axis direction: on frames binned for speed, then again on roughly centred frames ------
    t = time.perf_counter()
    factor = max(1, int(np.ceil(max(f.shape[1:]) / p.search_size)))
    small, _ = bin_frames(work, factor)
    angle = float(p.tilt_axis_angle_deg or 0.0)
    axis_info: dict[str, Any] = {"search_binning": factor}
    profiles_trusted = False
    if p.estimate_rotation:
        first = estimate_axis_direction(small, order=order, search_deg=p.rotation_search_deg,
                                        detect_quarter_turn=p.detect_quarter_turn, initial_deg=angle)
        # Profiles find the direction precisely where projections are linear, but a particle nearly
        # symmetric about the axis cannot tell them a quarter turn, and on real detector data a wrong
        # direction can look better to them (it blurs features whose contrast varies with tilt). So the
        # quarter turn is the orientation whose drift-corrected frames one reconstruction (per time
        # window for a changing particle) fits best, and the profile angle must fit at least as well
        # as that orientation's plain angle, and not sit at the edge of the search, to be kept.
        start_residual = angle - 90.0 * round(angle / 90.0)
        plain = {k: 90.0 * round(a / 90.0) + start_residual for k, a in first.candidates.items()}
        fits = {k: _coarse(small, angles, a, p, groups=groups)[2] for k, a in plain.items()} if len(plain) > 1 else {}
        k = min(fits, key=fits.get) if fits else first.quarter_turns
        angle, profile_angle = plain[k], first.candidates[k]
        axis_info.update(candidates_deg=first.candidates, profile_scores=first.scores, orientation_residuals=fits)
        at_edge = abs(profile_angle - angle) > p.rotation_search_deg - 0.5
        # compared on smoothed frames: resampling at a non-right angle smooths a little, and smoother
        # frames are easier to fit, which would favour any angle that needs resampling
        smooth = ndimage.gaussian_filter(small, (0, 1.5, 1.5))
        trial = {} if at_edge else {a: _coarse(smooth, angles, a, p, groups=groups)[2] for a in (angle, profile_angle)}
        axis_info["rotation_residuals"] = {str(round(a, 4)): v for a, v in trial.items()}
        if trial and trial[profile_angle] <= trial[angle]:
            # refine narrowly on frames turned by the estimate and centred: rotations add, and a
            # drifting particle is kept clear of the frame edges
            centred = _rough_centring(transform_frames(small, tilt_axis_angle_deg=profile_angle), angles)
            second = estimate_axis_direction(centred, order=order, search_deg=1.0, step_deg=0.25,
                                             detect_quarter_turn=False, initial_deg=0.0)
            angle = profile_angle + second.tilt_axis_angle_deg
            axis_info["profile_residual"] = second.residual
            profiles_trusted = True
        else:
            log.info("tilt-axis direction: the profile estimate %.2f° %s; kept %.2f°", profile_angle,
                     "is at the edge of the search" if at_edge else "fits worse", angle)
    timings["axis_direction_s"] = time.perf_counter() - t

    # -- coarse drift and axis offset ---------------------------------------------------------------
    t = time.perf_counter()
    oriented = transform_frames(work, tilt_axis_angle_deg=angle)
    shifts, offset, residual = _coarse(oriented, angles, 0.0, p, binning=factor, groups=groups)
    axis_info["coarse_residual"] = residual
    timings["coarse_s"] = time.perf_counter() - t

    # -- projection matching, alternating with the in-plane angle ---------------------------------
    match_info: dict[str, Any] = {}
    mp = replace(p.matching_params, time_window_frames=p.window_frames if dynamic else None)
    if p.matching:
        t = time.perf_counter()
        res = projection_matching(oriented, angles, shifts_px=shifts, axis_offset_px=offset, times_s=times, params=mp)
        shifts, offset = res.shifts_px, res.axis_offset_px
        match_info = _matching_info(res, dynamic, mp)
        timings["matching_s"] = time.perf_counter() - t
    if p.estimate_rotation and p.refine_rotation:
        t = time.perf_counter()
        angle, shifts, offset, rounds = _refine_rotation(work, angles, times, angle, shifts, offset, p, mp, groups,
                                                         profiles_trusted)
        axis_info["refinement"] = rounds
        rematched = [r["matching"] for r in rounds if "matching" in r]
        if rematched:
            match_info["after_rotation"] = rematched[-1]
        timings["rotation_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    shifts, const, _ = split_gauge(shifts, angles)
    info = {"coarse": p.coarse, "axis": axis_info, "matching": match_info, "timings": timings,
            "params": {k: v for k, v in asdict(p).items() if k != "matching_params"}}
    log.info("aligned %d frames in %.1f s: tilt axis %.2f°, offset %.2f px, drift rms %.2f px", f.shape[0],
             timings["total_s"], angle, offset + const, float(np.sqrt(np.mean(shifts**2))))
    return Alignment(shifts_px=shifts, axis_offset_px=offset + const, tilt_axis_angle_deg=angle,
                     input_shape=(int(f.shape[1]), int(f.shape[2])), frame_shape=oriented_shape(f.shape[1:], angle),
                     normalization=norm, info=info)


def _matching_info(res: Any, dynamic: bool, mp: MatchingParams) -> dict[str, Any]:
    return {"dynamic": dynamic, "rounds": res.rounds, "converged": res.converged, "max_update_px": res.max_update_px,
            "reprojection_nrmse": res.reprojection_nrmse, "params": asdict(mp)}


def _refine_rotation(work: np.ndarray, angles: np.ndarray, times: np.ndarray, angle: float, shifts: np.ndarray,
                     offset: float, p: AlignParams, mp: MatchingParams, groups: list[np.ndarray] | None,
                     profiles_trusted: bool) -> tuple[float, np.ndarray, float, list[dict[str, Any]]]:
    """The in-plane angle from band offsets (:func:`~.rotation.axis_angle_from_bands`), alternating
    with projection matching at the new angle until it moves less than ``tol_deg`` (or, after the
    first round, less than twice the estimate's standard error).

    A trusted profile angle stands unless the bands disagree by more than ``agree_deg`` and
    ``agree_sigmas`` standard errors. Drifts estimated at one angle are carried to the next with the
    specimen's trajectory (:func:`~.rotation.carry_alignment`) and re-matched there.
    """
    rp = p.rotation_params
    rounds: list[dict[str, Any]] = []
    for _ in range(rp.max_rounds):
        corrected = transform_frames(work, tilt_axis_angle_deg=angle, shifts_px=shifts)
        delta, stderr, info = axis_angle_from_bands(corrected, angles, axis_offset_px=offset, groups=groups, params=rp)
        info["start_deg"] = angle
        rounds.append(info)
        if profiles_trusted and (abs(delta) <= rp.agree_deg or abs(delta) <= rp.agree_sigmas * stderr):
            info["kept"] = "the profile angle (the bands agree within their precision)"
            break
        profiles_trusted = False
        delta = float(np.clip(delta, -p.rotation_search_deg, p.rotation_search_deg))
        if abs(delta) < max(rp.tol_deg, 2.0 * stderr if len(rounds) > 1 else 0.0):
            break  # converged: the move is within twice the estimate's own standard error
        track = specimen_track(corrected, angles)
        shifts, offset = carry_alignment(shifts, offset, track, angles, delta)
        angle += delta
        log.debug("tilt-axis angle %.3f° from the band offsets (%+.3f° ± %.3f°)", angle, delta, stderr)
        if not p.matching:
            break  # nothing re-estimates the drifts at the new angle
        oriented = transform_frames(work, tilt_axis_angle_deg=angle)
        res = projection_matching(oriented, angles, shifts_px=shifts, axis_offset_px=offset, times_s=times, params=mp)
        shifts, offset = res.shifts_px, res.axis_offset_px
        info["matching"] = _matching_info(res, groups is not None, mp)
    return angle, shifts, offset, rounds


def _rough_centring(frames: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Frames moved by their coarse drift (profiles along the axis, centre of mass across it)."""
    dy = axis_drift(frames)
    du, _, _ = centre_of_mass_drift(frames, angles)
    return transform_frames(frames, shifts_px=np.stack([dy, du], axis=1))


def _coarse(frames: np.ndarray, angles: np.ndarray, tilt_axis_angle_deg: float, p: AlignParams, *,
            binning: int | None = None, groups: list[np.ndarray] | None = None) -> tuple[np.ndarray, float, float]:
    """Coarse drift, tilt-axis offset and the reprojection residual they leave.

    Frames (N, Y, X) are turned by ``tilt_axis_angle_deg``; dy comes from the tilt-axis profiles,
    du from the centre of mass or the neighbour chain (``p.coarse``); the offset is searched on a
    copy binned by ``binning`` (default: to at most ``p.search_size`` pixels), reconstructing the
    ``groups`` of frames (time windows of a changing particle) each on its own.

    Returns
    -------
    shifts (N, 2) px, axis_offset_px, residual (NRMSE of a reconstruction of the corrected frames).
    """
    oriented = transform_frames(frames, tilt_axis_angle_deg=tilt_axis_angle_deg) if tilt_axis_angle_deg else frames
    dy = axis_drift(oriented)
    du = np.zeros_like(dy)
    offset = 0.0
    if p.coarse == "com":
        du, offset, _ = centre_of_mass_drift(oriented, angles)
    elif p.coarse == "neighbours":
        chained = neighbour_drift(transform_frames(oriented, shifts_px=np.stack([dy, du], 1)), angles)
        du = split_gauge(chained, angles)[0][:, 1]
    shifts = np.stack([dy, du], axis=1)
    factor = binning or max(1, int(np.ceil(max(oriented.shape[1:]) / p.search_size)))
    corrected, centre_shift = bin_frames(transform_frames(oriented, shifts_px=shifts), factor)
    off_b, residual = estimate_axis_offset(corrected, angles, initial_px=(offset - centre_shift) / factor,
                                           search_px=p.offset_search_px / factor, tol_px=0.05 / factor,
                                           groups=groups, full_output=True)
    return shifts, off_b * factor + centre_shift, residual


def apply_alignment(series: Any, alignment: Alignment, *, centre_axis: bool = True) -> Any:
    """The aligned :class:`~tiltstream.stream.series.TiltSeries`, with the alignment in its metadata.

    Per-frame corrections are also recorded as extra fields ``align_shift_px`` (N, 2) and, after
    normalisation, ``align_background`` and ``align_scale``.
    """
    from tiltstream.stream.series import TiltSeries  # noqa: PLC0415

    frames = alignment.apply(series.frames, centre_axis=centre_axis)
    al = {**alignment.to_metadata(), "axis_offset_applied_to_frames": bool(centre_axis)}
    meta = {**series.metadata, "alignment": al}
    extra = {**series.extra, "align_shift_px": alignment.shifts_px.copy()}
    if alignment.normalization is not None:
        extra["align_background"] = alignment.normalization.offsets.copy()
        extra["align_scale"] = alignment.normalization.scales.copy()
    return TiltSeries(frames=frames, angles_deg=series.angles_deg, times_s=series.times_s, exposure_s=series.exposure_s,
                      pixel_nm=series.pixel_nm, extra=extra, metadata=meta, source=f"{series.source} (aligned)")
