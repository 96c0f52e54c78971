"""Signed-distance helpers (torch) for analytic phantoms.

Points are given as three broadcastable float32 tensors ``z, y, x`` in nm (typically shaped
(Z,1,1), (1,Y,1), (1,1,X)); every function returns the signed distance in nm (negative inside),
broadcast to the full grid. Vectors (centres, axes) are ``(z, y, x)`` tuples in nm.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

Vec3 = Sequence[float]

__all__ = [
    "occupancy",
    "rotation_matrix",
    "sd_capsule",
    "sd_round_box",
    "sd_round_cone",
    "sd_sphere",
    "smooth_min",
    "unit",
]


def unit(v: Vec3) -> np.ndarray:
    """``v`` (z, y, x) scaled to unit length."""
    a = np.asarray(v, dtype=np.float64)
    norm = float(np.linalg.norm(a))
    if norm == 0:
        raise ValueError("expected a non-zero direction, got (0, 0, 0)")
    return a / norm


def rotation_matrix(angles_deg: Vec3) -> np.ndarray:
    """3×3 rotation acting on (z, y, x) column vectors: rotations about z, then y, then x (degrees)."""
    a, b, c = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    # Axis order in index space (z, y, x) = (0, 1, 2).
    rz = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _sub(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, c: Vec3):
    return z - float(c[0]), y - float(c[1]), x - float(c[2])


def _norm2(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return z * z + y * y + x * x


def sd_sphere(z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, center: Vec3, radius: float) -> torch.Tensor:
    """Sphere of ``radius`` nm at ``center``."""
    pz, py, px = _sub(z, y, x, center)
    return torch.sqrt(_norm2(pz, py, px)) - float(radius)


def _axial_radial(z, y, x, a: Vec3, direction: np.ndarray):
    """Axial coordinate along ``direction`` from ``a`` and radial distance from that axis."""
    pz, py, px = _sub(z, y, x, a)
    axial = pz * float(direction[0]) + py * float(direction[1]) + px * float(direction[2])
    radial = torch.sqrt(torch.clamp(_norm2(pz, py, px) - axial * axial, min=0.0))
    return axial, radial


def sd_capsule(
    z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, a: Vec3, b: Vec3, radius: float
) -> torch.Tensor:
    """Spherocylinder: all points within ``radius`` nm of the segment a–b."""
    ab = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    length = float(np.linalg.norm(ab))
    if length == 0.0:
        return sd_sphere(z, y, x, a, radius)
    axial, radial = _axial_radial(z, y, x, a, ab / length)
    excess = torch.clamp(axial - length, min=0.0) + torch.clamp(axial, max=0.0)
    return torch.sqrt(radial * radial + excess * excess) - float(radius)


def sd_round_cone(
    z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, a: Vec3, b: Vec3, ra: float, rb: float
) -> torch.Tensor:
    """Round cone: convex hull of a sphere ``ra`` nm at ``a`` and a sphere ``rb`` nm at ``b``."""
    ab = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    h = float(np.linalg.norm(ab))
    if h <= abs(ra - rb):  # one sphere contains the other
        return sd_sphere(z, y, x, a, ra) if ra >= rb else sd_sphere(z, y, x, b, rb)
    axial, radial = _axial_radial(z, y, x, a, ab / h)
    sb = (ra - rb) / h
    ca = math.sqrt(1.0 - sb * sb)
    k = -sb * radial + ca * axial
    d_side = ca * radial + sb * axial - ra
    d_a = torch.sqrt(radial * radial + axial * axial) - ra
    d_b = torch.sqrt(radial * radial + (axial - h) ** 2) - rb
    return torch.where(k < 0.0, d_a, torch.where(k > ca * h, d_b, d_side))


def sd_round_box(
    z: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    center: Vec3,
    half_nm: Vec3,
    rounding_nm: float,
    rotation: np.ndarray | None = None,
) -> torch.Tensor:
    """Box of half-edges ``half_nm`` (outer, nm) with edges rounded by ``rounding_nm``.

    ``rotation`` (3×3, acting on (z, y, x)) maps box-frame vectors to grid vectors.
    """
    pz, py, px = _sub(z, y, x, center)
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    # Local coordinates q = Rᵀ p.
    q = [pz * float(r[0, i]) + py * float(r[1, i]) + px * float(r[2, i]) for i in range(3)]
    d = [torch.abs(qi) - (float(hi) - rounding_nm) for qi, hi in zip(q, half_nm)]
    outside = torch.sqrt(_norm2(*(torch.clamp(di, min=0.0) for di in d)))
    inside = torch.clamp(torch.maximum(d[0], torch.maximum(d[1], d[2])), max=0.0)
    return outside + inside - float(rounding_nm)


def smooth_min(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    """Polynomial smooth minimum (union with a fillet of size ~``k`` nm); ``min`` when k ≤ 0."""
    if k <= 0:
        return torch.minimum(a, b)
    h = torch.clamp(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def occupancy(sdf: torch.Tensor, spacing_nm: float) -> torch.Tensor:
    """Anti-aliased occupancy in [0, 1]: a linear ramp of one sample spacing across the surface."""
    return torch.clamp(0.5 - sdf / float(spacing_nm), 0.0, 1.0)
