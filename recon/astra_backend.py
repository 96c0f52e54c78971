"""ASTRA CUDA backend (3-D parallel beam, vector geometry). Imported only when a GPU is present.

Never import or call this module on a machine without CUDA: ASTRA's CUDA entry points can kill the
process there (SIGFPE). :func:`tiltstream.recon.projector.operator` checks ``astra.use_cuda()`` first.

Mapping to ASTRA: our (Z, Y, X) volume is ASTRA's (slices, rows, cols) array with world axes
(z, y, x); at tilt θ the rays run along (−sinθ, 0, cosθ), detector columns step along
(cosθ, 0, sinθ) and rows along +y, and the detector centre sits at −axis_offset·(cosθ, 0, sinθ) so
that the tilt axis lands ``axis_offset_px`` right of the centre, as in the torch backend.
"""

from __future__ import annotations

import numpy as np
import torch

from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import Projector

__all__ = ["AstraCudaProjector", "astra_vectors"]


def astra_vectors(proj: ProjectionGeometry) -> np.ndarray:
    """(N, 12) ASTRA ``parallel3d_vec`` rows for ``proj``: ray, detector centre, u step, v step."""
    th = proj.angles_rad
    c, s = np.cos(th), np.sin(th)
    zeros, ones = np.zeros_like(th), np.ones_like(th)
    ray = np.stack([-s, zeros, c], axis=1)
    u = np.stack([c, zeros, s], axis=1)
    v = np.stack([zeros, ones, zeros], axis=1)
    centre = -proj.axis_offset_px * u
    return np.concatenate([ray, centre, u, v], axis=1)


class AstraCudaProjector(Projector):
    """ASTRA FP3D/BP3D on the GPU. Inputs and outputs stay torch tensors on the operator's device."""

    backend = "astra"

    def __init__(self, vol: VolumeGeometry, proj: ProjectionGeometry, *, device: torch.device, dtype=torch.float32):
        import astra  # noqa: PLC0415

        super().__init__(vol, proj, device, torch.float32)
        self._astra = astra
        nz, ny, nx = vol.shape
        self._vol_geom = astra.create_vol_geom(ny, nx, nz)
        self._proj_geom = astra.create_proj_geom("parallel3d_vec", proj.det_shape[0], proj.det_shape[1],
                                                 astra_vectors(proj))

    def _fp(self, x: np.ndarray) -> np.ndarray:
        sid, sino = self._astra.create_sino3d_gpu(x, self._proj_geom, self._vol_geom)
        self._astra.data3d.delete(sid)
        return np.ascontiguousarray(sino.transpose(1, 0, 2))  # (rows, N, cols) -> (N, rows, cols)

    def _bp(self, y: np.ndarray) -> np.ndarray:
        sino = np.ascontiguousarray(y.transpose(1, 0, 2))
        bid, vol = self._astra.create_backprojection3d_gpu(sino, self._proj_geom, self._vol_geom)
        self._astra.data3d.delete(bid)
        return vol

    def _batched(self, t: torch.Tensor, fn, out_shape) -> torch.Tensor:
        arr = t.detach().to("cpu", torch.float32).numpy()
        flat = arr.reshape(-1, *arr.shape[-3:])
        res = np.stack([fn(np.ascontiguousarray(a)) for a in flat]).reshape(*arr.shape[:-3], *out_shape)
        return torch.as_tensor(res, device=t.device)

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        return self._batched(x, self._fp, self.range_shape)

    def _adjoint_impl(self, y: torch.Tensor) -> torch.Tensor:
        return self._batched(y, self._bp, self.domain_shape)
