"""The DIP's projection layer: generated slices of a batch of frames → predicted detector rows.

Every row of frame f shares the frame's angle θ_f, so the strip-model matrix A_f (U × Z·X) is built
once per frame and applied to all of that frame's slices with one batched matrix product. The
matrices come from the one strip-model factory (:func:`~tiltstream.recon.footprint.strip_csr`),
so the DIP projects exactly as the projectors and SIRT do (tested equal to ``A[f]``) and,
because it is a plain linear map in torch, its gradient is exactly A_fᵀ of the residual (tested).
"""

from __future__ import annotations

import numpy as np
import torch

from tiltstream.recon.footprint import strip_csr

__all__ = ["frame_matrices", "project_frames", "shift_rows"]


def frame_matrices(
    angles_deg, shape_zx: tuple[int, int], n_det: int, *, axis_offset_px: float = 0.0,
    device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Dense strip-model matrices (F, U, Z·X) for F angles (degrees); voxel v = z·X + x."""
    ang = torch.as_tensor(np.deg2rad(np.asarray(angles_deg, dtype=np.float64)).reshape(-1), device=device)
    nz, nx = shape_zx
    (crow, cols, w), _, (m, nv) = strip_csr(ang, nz, nx, n_det, axis_offset_px, dtype=dtype)
    rows = torch.repeat_interleave(torch.arange(m, device=ang.device), torch.diff(crow).to(torch.int64))
    out = torch.zeros(m * nv, device=device, dtype=dtype)
    out[rows * nv + cols] = w
    return out.reshape(ang.shape[0], n_det, nv)


def project_frames(slices: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """(F, R, Z, X) slices (R rows of each of F frames), (F, U, Z·X) matrices → (F, R, U) rows."""
    f, r, nz, nx = slices.shape
    if matrices.shape[0] != f or matrices.shape[2] != nz * nx:
        raise ValueError(f"matrices: expected ({f}, U, {nz * nx}), got {tuple(matrices.shape)}")
    return torch.bmm(slices.reshape(f, r, nz * nx), matrices.transpose(1, 2))


def shift_rows(rows: torch.Tensor, du: torch.Tensor) -> torch.Tensor:
    """Shift (F, R, U) detector rows right by ``du`` (F,) pixels (linear interpolation, zero outside);
    differentiable in both ``rows`` and ``du``."""
    f, r, nu = rows.shape
    src = torch.arange(nu, device=rows.device, dtype=rows.dtype).reshape(1, 1, -1) - du.reshape(-1, 1, 1)
    lo = torch.floor(src)
    frac = src - lo
    lo_i = lo.long()
    out = torch.zeros_like(rows.expand(f, r, nu))
    for idx, wgt in ((lo_i, 1.0 - frac), (lo_i + 1, frac)):
        ok = (idx >= 0) & (idx < nu)
        vals = torch.gather(rows, 2, idx.clamp(0, nu - 1).expand(f, r, nu))
        out = out + torch.where(ok, wgt, torch.zeros_like(wgt)) * vals
    return out
