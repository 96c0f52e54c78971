"""Apply an alignment to frames: in-plane rotation of the tilt axis plus per-frame shifts, resampled once.

Angles follow :mod:`tiltstream.stream.orient` (IMOD convention): ``tilt_axis_angle_deg`` is the angle
of the tilt axis in the stored frames, counter-clockwise from the image Y axis; its direction in
(column, row) index units is ``(−sin a, cos a)``. The output frame has the tilt axis along its rows
(the tiltstream convention); an angle near ±90° swaps the frame shape, as ``orient_frames`` does.

A shift (dy, du) is the drift of a frame's content in output (aligned) coordinates; it is removed,
so output(p) = rotated input(p + shift). Rotation and shift together are one affine map and one
interpolation (cubic spline by default), not two.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["oriented_shape", "transform_frames", "rotation_matrix_rc"]


def oriented_shape(frame_shape: tuple[int, int], tilt_axis_angle_deg: float) -> tuple[int, int]:
    """(Y, U) of the output frame: swapped when the angle is nearer an odd multiple of 90°."""
    k = int(np.round(float(tilt_axis_angle_deg) / 90.0)) % 2
    h, w = (int(s) for s in frame_shape)
    return (w, h) if k else (h, w)


def rotation_matrix_rc(tilt_axis_angle_deg: float) -> np.ndarray:
    """2×2 map from output (row, col) offsets to input (row, col) offsets.

    Its first column is the tilt-axis direction in the input, (cos a, −sin a) in (row, col) units;
    the second is the direction perpendicular to it that becomes the output columns.
    """
    a = np.deg2rad(float(tilt_axis_angle_deg))
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, s], [-s, c]])


def transform_frames(
    frames: np.ndarray,
    *,
    tilt_axis_angle_deg: float = 0.0,
    shifts_px: np.ndarray | None = None,
    order: int = 3,
    mode: str = "nearest",
    cval: float = 0.0,
) -> np.ndarray:
    """Rotate the tilt axis onto the rows and remove per-frame shifts, in one resampling.

    Parameters
    ----------
    frames : (N, Y, X) frames as stored.
    tilt_axis_angle_deg : tilt-axis angle in the stored frames (IMOD convention, degrees).
    shifts_px : (N, 2) drifts (dy, du) in output pixels to remove; None for no shifts.
    order : spline order of the interpolation (1 linear, 3 cubic).
    mode : how pixels from outside the frame are filled (``scipy.ndimage`` modes): ``"nearest"``
        repeats the edge, so a specimen that runs out of the field of view (a needle's shaft) is not
        cut short where a frame is shifted; ``"constant"`` fills with ``cval``.
    cval : value for pixels brought in from outside the frame with ``mode="constant"``.

    Returns
    -------
    (N, Y', U') float32 frames with the tilt axis along the rows.
    """
    f = np.asarray(frames)
    if f.ndim != 3:
        raise ValueError(f"frames: expected a 3-D array (N, Y, X), got shape {f.shape}")
    n = f.shape[0]
    shifts = np.zeros((n, 2)) if shifts_px is None else np.asarray(shifts_px, dtype=np.float64)
    if shifts.shape != (n, 2):
        raise ValueError(f"shifts_px: expected shape ({n}, 2) (dy, du per frame), got {shifts.shape}")
    if not np.isfinite(shifts).all() or not np.isfinite(tilt_axis_angle_deg):
        raise ValueError("shifts_px, tilt_axis_angle_deg: expected finite values, got NaN/Inf")
    out_shape = oriented_shape(f.shape[1:], tilt_axis_angle_deg)
    m = rotation_matrix_rc(tilt_axis_angle_deg)
    c_in = (np.array(f.shape[1:], dtype=np.float64) - 1) / 2
    c_out = (np.array(out_shape, dtype=np.float64) - 1) / 2
    a = float(tilt_axis_angle_deg)
    exact = abs(a - 90.0 * np.round(a / 90.0)) < 1e-9
    out = np.empty((n, *out_shape), dtype=np.float32)
    for i in range(n):
        if exact and not shifts[i].any():
            k = int(np.round(a / 90.0)) % 4
            out[i] = np.rot90(f[i], k=k) if k else f[i]
            continue
        offset = c_in + m @ (shifts[i] - c_out)
        out[i] = ndimage.affine_transform(np.asarray(f[i], dtype=np.float64), m, offset=offset,
                                          output_shape=out_shape, order=order, mode=mode, cval=cval)
    return out
