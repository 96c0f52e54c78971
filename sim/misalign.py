"""Misalignment of the tilt axis in the image plane (the detector is rotated against the stage).

:func:`rotate_tilt_axis` turns frames simulated in the tiltstream convention (tilt axis along the
rows) into frames as a microscope with an in-plane tilt-axis angle would record them. The angle
follows the IMOD convention of ``tiltstream.stream.orient``: counter-clockwise from the image Y
axis, axis direction ``(−sin a, cos a)`` in (column, row) index units; rotating the result back by
``orient_frames(frames, a)`` restores the frames (up to interpolation and lost corners).
Drift shifts and the axis offset of :func:`~tiltstream.sim.project` are applied before the rotation,
so they stay in the aligned frame's (dy, du) coordinates.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["rotate_tilt_axis"]


def rotate_tilt_axis(frames: np.ndarray, tilt_axis_angle_deg: float, *, order: int = 3) -> np.ndarray:
    """Frames (N, Y, U) with the tilt axis along Y → frames with the axis at ``tilt_axis_angle_deg``.

    Rotation is about the frame centre, by cubic-spline interpolation (``order``); pixels from
    outside the frame are 0. Angles within ±45° keep the frame shape; an angle nearer ±90° swaps it.
    """
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"expected frames of shape (N, Y, U), got {f.shape}")
    a = float(tilt_axis_angle_deg)
    if not np.isfinite(a):
        raise ValueError(f"expected a finite tilt_axis_angle_deg, got {tilt_axis_angle_deg}")
    k = int(np.round(a / 90.0)) % 2
    h, w = f.shape[1:]
    out_shape = (w, h) if k else (h, w)
    rad = np.deg2rad(a)
    c, s = np.cos(rad), np.sin(rad)
    # aligned (row, col) offset = R^T @ recorded (row, col) offset, R the aligned→recorded rotation
    inv = np.array([[c, -s], [s, c]])
    c_rec = (np.array(out_shape, dtype=np.float64) - 1) / 2
    c_al = (np.array(f.shape[1:], dtype=np.float64) - 1) / 2
    offset = c_al - inv @ c_rec
    out = np.empty((f.shape[0], *out_shape), dtype=np.float32)
    for i in range(f.shape[0]):
        out[i] = ndimage.affine_transform(f[i], inv, offset=offset, output_shape=out_shape, order=order,
                                          mode="constant", cval=0.0)
    return out
