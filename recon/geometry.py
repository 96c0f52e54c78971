"""Parallel-beam, single-tilt-axis geometry in the tiltstream conventions.

Volumes are (Z, Y, X); Y is the tilt axis and matches frame rows. Frames are (Y, U). At tilt θ a
voxel centred at (x, z) (voxel units, centred: index i ↦ i − (n−1)/2) lands on detector coordinate
``u = x·cosθ + z·sinθ``, i.e. on detector column ``j = u + (U−1)/2 + axis_offset_px``: the tilt axis
projects ``axis_offset_px`` pixels right of the detector centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeGeometry", "ProjectionGeometry", "volume_geometry", "projection_geometry"]


@dataclass(frozen=True)
class VolumeGeometry:
    """Voxel grid of shape (Z, Y, X); ``voxel_nm`` is the edge length of a cubic voxel in nm."""

    shape: tuple[int, int, int]
    voxel_nm: float = 1.0

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"volume shape: expected 3 positive sizes (Z, Y, X), got {self.shape}")
        if not (np.isfinite(self.voxel_nm) and self.voxel_nm > 0):
            raise ValueError(f"voxel_nm: expected a positive size in nm, got {self.voxel_nm}")
        object.__setattr__(self, "shape", shape)

    @property
    def nz(self) -> int:
        return self.shape[0]

    @property
    def ny(self) -> int:
        return self.shape[1]

    @property
    def nx(self) -> int:
        return self.shape[2]


@dataclass(frozen=True)
class ProjectionGeometry:
    """Tilt angles (degrees) and a detector of (Y, U) pixels, one pixel = one voxel edge.

    ``axis_offset_px`` is where the tilt axis projects, in pixels right of the detector centre.
    """

    angles_deg: np.ndarray
    det_shape: tuple[int, int]
    axis_offset_px: float = 0.0

    def __post_init__(self) -> None:
        angles = np.asarray(self.angles_deg, dtype=np.float64).reshape(-1)
        if angles.size == 0:
            raise ValueError("angles_deg: expected at least one angle, got none")
        bad = ~np.isfinite(angles)
        if bad.any():
            raise ValueError(f"angles_deg: expected finite angles, got NaN/Inf at {np.flatnonzero(bad)[:10].tolist()}")
        det = tuple(int(s) for s in self.det_shape)
        if len(det) != 2 or min(det) < 1:
            raise ValueError(f"det_shape: expected 2 positive sizes (Y, U), got {self.det_shape}")
        if not np.isfinite(self.axis_offset_px):
            raise ValueError(f"axis_offset_px: expected a finite offset, got {self.axis_offset_px}")
        angles.setflags(write=False)
        object.__setattr__(self, "angles_deg", angles)
        object.__setattr__(self, "det_shape", det)

    @property
    def n_angles(self) -> int:
        return int(self.angles_deg.size)

    def subset(self, idx) -> "ProjectionGeometry":
        """The geometry of frames ``idx`` (an index, a slice or an index array), in that order."""
        picked = np.atleast_1d(np.arange(self.n_angles)[idx])
        return ProjectionGeometry(self.angles_deg[picked], self.det_shape, self.axis_offset_px)

    @property
    def angles_rad(self) -> np.ndarray:
        return np.deg2rad(self.angles_deg)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of a stack of projections, (N, Y, U)."""
        return (self.n_angles, *self.det_shape)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProjectionGeometry)
            and self.det_shape == other.det_shape
            and self.axis_offset_px == other.axis_offset_px
            and np.array_equal(self.angles_deg, other.angles_deg)
        )

    def __hash__(self) -> int:
        return hash((self.angles_deg.tobytes(), self.det_shape, self.axis_offset_px))


def volume_geometry(shape: tuple[int, int, int], *, voxel_nm: float = 1.0) -> VolumeGeometry:
    """A (Z, Y, X) voxel grid."""
    return VolumeGeometry(tuple(shape), float(voxel_nm))


def projection_geometry(
    angles_deg: np.ndarray,
    *,
    det_shape: tuple[int, int],
    axis_offset_px: float = 0.0,
) -> ProjectionGeometry:
    """Projections at ``angles_deg`` on a (Y, U) detector."""
    return ProjectionGeometry(np.asarray(angles_deg, dtype=np.float64), tuple(det_shape), float(axis_offset_px))
