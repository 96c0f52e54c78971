"""HAADF forward model: noise-free projections of a (dynamic) phantom.

Geometry (see DESIGN.md): volume (Z, Y, X), frames (Y, U), Y is the tilt axis. At tilt θ detector
column j sees the line ``u = x·cosθ + z·sinθ`` with ``j = u + (U−1)/2 + axis_offset_px + du`` (voxel
units, centred): the tilt axis projects ``axis_offset_px`` pixels right of the detector centre (as in
``tiltstream.recon``), and a positive per-frame shift ``du`` (or ``dy``) moves the image toward higher
column (row) indices. Values are line integrals of the contrast volume in voxel-length units, so
an exact projector applied to ``phantom.contrast(t)`` reproduces them (up to discretisation).

To avoid the "inverse crime" this does not use a discrete projector matrix: the phantom is
rasterised from its analytic description on a ``supersample``× finer grid at each frame's time, the
fine volume is rotated and summed along the beam by bilinear resampling (torch ``grid_sample``, ray
samples one fine voxel apart), and the fine detector pixels are binned down.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .phantom_base import Phantom

log = logging.getLogger(__name__)

_MAX_SAMPLES = 1 << 24  # interpolated samples per grid_sample call (bounds memory to ~64 MB)

__all__ = ["project"]


def _per_frame(value: float | Sequence[float] | np.ndarray | None, n: int, name: str) -> np.ndarray:
    arr = np.asarray(0.0 if value is None else value, dtype=np.float64)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    arr = arr.reshape(-1)
    if arr.size != n:
        raise ValueError(f"expected {name} to be a scalar or have {n} entries, got {arr.size}")
    return arr


def _rotate_sum(
    vol: torch.Tensor,
    theta_rad: np.ndarray,
    u_fine: np.ndarray,
    t_fine: np.ndarray,
    s: int,
) -> torch.Tensor:
    """Line integrals through ``vol`` (1, C=Y rows, Z, X) for each ray direction.

    ``theta_rad`` (n,), ``u_fine`` (n, Uc) detector positions and ``t_fine`` (T,) positions along the
    ray, both in coarse voxel units. Returns (C, n, Uc) sums over the ray times the step 1/s.
    """
    _, c, nz, nx = vol.shape
    n, ucols = u_fine.shape
    cos, sin = np.cos(theta_rad)[:, None, None], np.sin(theta_rad)[:, None, None]
    u = u_fine[:, None, :]
    t = t_fine[None, :, None]
    x = u * cos - t * sin
    z = u * sin + t * cos
    # Coarse voxel units -> fine index -> grid_sample's [-1, 1] (align_corners=True).
    gx = 2.0 * (s * x + (nx - 1) / 2.0) / (nx - 1) - 1.0
    gz = 2.0 * (s * z + (nz - 1) / 2.0) / (nz - 1) - 1.0
    grid = torch.from_numpy(np.stack([gx, gz], axis=-1).astype(np.float32)).view(1, n * t_fine.size, ucols, 2)
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.view(c, n, t_fine.size, ucols).sum(dim=2) / s


def project(
    phantom: Phantom,
    angles_deg: Sequence[float] | np.ndarray,
    times_s: float | Sequence[float] | np.ndarray,
    *,
    exponent: float = 1.8,
    exposure_s: float | Sequence[float] | np.ndarray | None = None,
    tilt_speed_deg_s: float | Sequence[float] | np.ndarray | None = None,
    blur_substeps: int = 1,
    supersample: int = 2,
    axis_offset_px: float = 0.0,
    shifts_px: np.ndarray | None = None,
    detector_cols: int | None = None,
) -> np.ndarray:
    """Noise-free HAADF projections (N, Y, U) float32 of ``phantom``.

    Args:
        phantom: the particle; frame i shows it at time ``times_s[i]``.
        angles_deg: (N,) nominal tilt angles in degrees.
        times_s: (N,) mid-exposure times in s, or one time for all frames.
        exponent: HAADF Z-exponent of the contrast (intensity ∝ thickness · Z^exponent).
        exposure_s, tilt_speed_deg_s: scalars or (N,); with ``blur_substeps`` > 1 each frame averages
            ``blur_substeps`` sub-angles spread evenly over the ``exposure_s·tilt_speed_deg_s`` degrees
            swept (continuous tilting) centred on the nominal angle.
        supersample: rasterisation and ray sampling is this many times finer than the voxel grid.
        axis_offset_px: where the tilt axis projects, in pixels right of the detector centre
            (``j = u + (U−1)/2 + axis_offset_px``).
        shifts_px: (N, 2) per-frame image shifts (dy, du) in pixels, applied sub-pixel.
        detector_cols: U, the number of detector columns (default X).

    Returns:
        (N, Y, U) float32 line integrals of the contrast volume, in voxel-length units.
    """
    angles = np.asarray(angles_deg, dtype=np.float64).reshape(-1)
    n = angles.size
    times = _per_frame(times_s, n, "times_s")
    s = int(supersample)
    if s < 1:
        raise ValueError(f"expected supersample >= 1, got {supersample}")
    k = int(blur_substeps)
    if k < 1:
        raise ValueError(f"expected blur_substeps >= 1, got {blur_substeps}")
    if k > 1 and (exposure_s is None or tilt_speed_deg_s is None):
        raise ValueError("blur_substeps > 1 needs exposure_s and tilt_speed_deg_s")
    sweep = _per_frame(exposure_s, n, "exposure_s") * _per_frame(tilt_speed_deg_s, n, "tilt_speed_deg_s")
    shifts = np.zeros((n, 2)) if shifts_px is None else np.asarray(shifts_px, dtype=np.float64)
    if shifts.shape != (n, 2):
        raise ValueError(f"expected shifts_px of shape ({n}, 2), got {shifts.shape}")
    nz, ny, nx = phantom.shape
    ucols = int(detector_cols) if detector_cols is not None else nx
    if ucols < 1:
        raise ValueError(f"expected detector_cols >= 1, got {detector_cols}")

    tick = time.perf_counter()
    fine_shape = (s * nz, s * ny, s * nx)
    spacing = phantom.voxel_nm / s
    reach = phantom.extent_radius_nm / phantom.voxel_nm + 1.0  # particle radius + margin, voxels
    # Ray samples one fine voxel apart, aligned with fine voxel centres at 0 degrees.
    n_t = 2 * int(math.ceil(reach * s)) + 1
    if (n_t - s * nz) % 2:
        n_t += 1
    t_fine = (np.arange(n_t) - (n_t - 1) / 2.0) / s
    # Rows (Y) and detector columns that can see the particle.
    y_fine = (np.arange(s * ny) - (s * ny - 1) / 2.0) / s
    rows = np.flatnonzero(np.abs(y_fine) <= reach)
    r0, r1 = int(rows[0]), int(rows[-1]) + 1
    u_base = (np.arange(s * ucols) - (s * ucols - 1) / 2.0) / s - axis_offset_px
    u_frames = u_base[None, :] - shifts[:, 1:2]  # (N, sU)
    sub = (np.arange(k) + 0.5) / k - 0.5
    theta = np.deg2rad(angles[:, None] + sweep[:, None] * sub[None, :])  # (N, k)

    fine = np.zeros((n, s * ny, s * ucols), dtype=np.float32)
    unique_times, inverse = np.unique(times, return_inverse=True)
    if phantom.is_static:
        unique_times, inverse = unique_times[:1], np.zeros(n, dtype=np.int64)
    for ti, t in enumerate(unique_times):
        frames = np.flatnonzero(inverse == ti)
        vol = phantom.sample_contrast(float(t), fine_shape, spacing, exponent=exponent)
        vol = vol[:, r0:r1, :].permute(1, 0, 2).unsqueeze(0).contiguous()  # (1, rows, Z, X)
        visible = np.abs(u_frames[frames]) <= reach
        cols = np.flatnonzero(visible.any(axis=0))
        if cols.size == 0:
            continue
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        per_ray = (r1 - r0) * n_t * (c1 - c0)
        chunk = max(1, _MAX_SAMPLES // max(per_ray * k, 1))
        for start in range(0, frames.size, chunk):
            idx = frames[start : start + chunk]
            th = theta[idx].reshape(-1)
            uu = np.repeat(u_frames[idx, c0:c1], k, axis=0)
            with torch.no_grad():
                proj = _rotate_sum(vol, th, uu, t_fine, s)  # (rows, m·k, cols)
            proj = proj.view(r1 - r0, idx.size, k, c1 - c0).mean(dim=2).permute(1, 0, 2)
            fine[idx, r0:r1, c0:c1] = proj.numpy()

    for i in np.flatnonzero(shifts[:, 0] != 0.0):
        fine[i] = ndimage.shift(fine[i], (shifts[i, 0] * s, 0.0), order=1, mode="constant", cval=0.0)
    frames_out = fine.reshape(n, ny, s, ucols, s).mean(axis=(2, 4), dtype=np.float64).astype(np.float32)
    log.debug(
        "projected %d frames of %s at %d unique times (supersample %d, %d sub-angles) in %.2f s",
        n, phantom.shape, unique_times.size, s, k, time.perf_counter() - tick,
    )
    return frames_out
