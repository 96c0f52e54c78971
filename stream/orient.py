"""Bring frames into the tiltstream convention: tilt axis along the frame rows (Y).

Convention for the in-plane tilt-axis angle (IMOD's): ``tilt_axis_angle_deg`` is the angle of the
tilt axis measured counter-clockwise from the image Y axis, in a right-handed frame where x is the
column index and y the row index (as IMOD displays images: y up). 0° means the axis already runs
along Y (the tiltstream convention); 90° means it runs along X (the columns).

To undo that angle the frames are rotated clockwise (in that x-right/y-up frame) by the angle:
exactly, with ``np.rot90``, for the nearest multiple of 90°, then by linear interpolation
(``scipy.ndimage.rotate``, order 1, same frame shape) for what is left, which is within ±45°.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["orient_frames", "tilt_axis_direction"]

_log = logging.getLogger(__name__)

#: residual angles below this (degrees) are treated as exact multiples of 90°
EXACT_TOL_DEG = 1e-6


def tilt_axis_direction(tilt_axis_angle_deg: float) -> tuple[float, float]:
    """Unit vector ``(dx, dy)`` of the tilt axis in (column, row) index units for the given angle."""
    a = np.deg2rad(tilt_axis_angle_deg)
    return float(-np.sin(a)), float(np.cos(a))


def orient_frames(
    frames: np.ndarray, tilt_axis_angle_deg: float, *, cval: float = 0.0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Rotate frames so that the tilt axis runs along their rows.

    Parameters
    ----------
    frames : (N, Y, X) array as stored, with the tilt axis at ``tilt_axis_angle_deg``.
    tilt_axis_angle_deg : tilt-axis angle in degrees, counter-clockwise from the image Y axis
        (IMOD convention, see the module docstring).
    cval : value for pixels that a non-right-angle rotation brings in from outside the frame.

    Returns
    -------
    frames : (N, Y', U) float32, tilt axis along Y'. A multiple of 90° is applied exactly (an odd
        multiple swaps the frame shape); any other angle keeps the shape of the 90°-rotated frame
        and interpolates linearly, losing the corners.
    info : what was applied: ``tilt_axis_angle_deg``, ``rot90_k`` (quarter turns clockwise),
        ``residual_deg`` (further clockwise rotation by interpolation), ``interpolated``.
    """
    angle = float(tilt_axis_angle_deg)
    if not np.isfinite(angle):
        raise ValueError(f"tilt_axis_angle_deg: expected a finite angle in degrees, got {angle}")
    k = int(np.round(angle / 90.0))
    residual = angle - 90.0 * k
    interpolated = abs(residual) > EXACT_TOL_DEG
    out = np.asarray(frames, dtype=np.float32)
    if k % 4:
        # rot90 over (Y, X) turns a (x right, y up) picture clockwise by 90° per step
        out = np.rot90(out, k=k % 4, axes=(1, 2))
    if interpolated:
        from scipy import ndimage

        # ndimage.rotate with a positive angle turns the same picture clockwise as well
        out = ndimage.rotate(out, residual, axes=(1, 2), reshape=False, order=1, mode="constant", cval=cval)
    out = np.ascontiguousarray(out, dtype=np.float32)
    info = {
        "tilt_axis_angle_deg": angle,
        "rot90_k": k % 4,
        "residual_deg": residual if interpolated else 0.0,
        "interpolated": interpolated,
    }
    if k % 4 or interpolated:
        _log.info(
            "rotated frames by %g deg clockwise to bring the tilt axis (at %g deg) along the rows%s",
            angle,
            angle,
            " (linear interpolation, corners filled with %g)" % cval if interpolated else " (exact)",
        )
    return out, info
