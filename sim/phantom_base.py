"""Phantom base class: an analytic, time-dependent composition field rasterised on voxel grids.

Coordinates: a volume has shape (Z, Y, X); voxel index i along an axis of n voxels sits at
``(i − (n−1)/2)·voxel_nm`` nm from the centre, so the particle is centred on the tilt axis (Y).
A phantom is defined by element volume fractions ``f_m(z, y, x, t)`` in [0, 1]; its HAADF contrast
is ``Σ_m f_m·(Z_m/79)^exponent`` (pure gold = 1).
"""

from __future__ import annotations

import abc
import math
from typing import Sequence

import numpy as np
import torch

ATOMIC_NUMBERS: dict[str, int] = {"Au": 79, "Pt": 78, "Ag": 47, "Pd": 46, "Cu": 29, "Ni": 28}
"""Atomic numbers of the elements phantoms may contain."""

_CHUNK_POINTS = 1 << 21  # grid points per rasterisation chunk (bounds temporaries to ~8 MB each)

__all__ = ["ATOMIC_NUMBERS", "FrozenPhantom", "Phantom", "smoothstep", "z_weight"]


def smoothstep(s: float) -> float:
    """Smooth progress 3s² − 2s³ of ``s`` clipped to [0, 1] (zero slope at both ends)."""
    s = min(max(float(s), 0.0), 1.0)
    return s * s * (3.0 - 2.0 * s)


def z_weight(element: str, exponent: float = 1.8) -> float:
    """HAADF weight ``(Z/79)^exponent`` of one element (gold = 1)."""
    try:
        z = ATOMIC_NUMBERS[element]
    except KeyError:
        raise ValueError(f"expected an element in {sorted(ATOMIC_NUMBERS)}, got {element!r}") from None
    return (z / ATOMIC_NUMBERS["Au"]) ** float(exponent)


def _axis_nm(n: int, spacing_nm: float) -> np.ndarray:
    return (np.arange(n, dtype=np.float64) - (n - 1) / 2.0) * spacing_nm


class Phantom(abc.ABC):
    """A time-dependent particle on a (Z, Y, X) voxel grid.

    Attributes:
        name: registry name.
        shape: (Z, Y, X) voxel counts of the default grid.
        voxel_nm: voxel edge (nm).
        duration_s: time over which the dynamic process runs (s); it is frozen after.
        elements: element symbols, e.g. ("Au", "Ag").
    """

    name: str = "phantom"
    elements: tuple[str, ...] = ("Au",)

    def __init__(self, shape: Sequence[int], voxel_nm: float | None, duration_s: float) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 3:
            raise ValueError(f"expected a (Z, Y, X) shape with every size >= 3, got {shape}")
        if not duration_s > 0:
            raise ValueError(f"expected duration_s > 0, got {duration_s}")
        self.shape: tuple[int, int, int] = shape  # type: ignore[assignment]
        self.duration_s = float(duration_s)
        radius = self.extent_radius_nm
        if voxel_nm is None:
            # Particle's largest extent (bounding-sphere diameter) fills 60 % of the smallest side.
            voxel_nm = 2.0 * radius / (0.6 * min(shape))
        if not voxel_nm > 0:
            raise ValueError(f"expected voxel_nm > 0, got {voxel_nm}")
        self.voxel_nm = float(voxel_nm)
        limit = self.voxel_nm * (min(shape) / 2.0 - 0.5)
        if radius > limit:
            raise ValueError(
                f"{self.name}: particle bounding radius {radius:.2f} nm exceeds the field of view "
                f"radius {limit:.2f} nm (shape {shape}, voxel {self.voxel_nm:.3f} nm); "
                "use a larger grid or a smaller voxel_nm"
            )

    # ----------------------------------------------------------------- to implement per phantom
    @property
    @abc.abstractmethod
    def extent_radius_nm(self) -> float:
        """Radius (nm) of a centred sphere containing the particle at every time."""

    @abc.abstractmethod
    def _fractions_nm(
        self, t_s: float, z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, spacing_nm: float
    ) -> dict[str, torch.Tensor]:
        """Element volume fractions at points (z, y, x) in nm, anti-aliased over ``spacing_nm``."""

    # ----------------------------------------------------------------------------- public API
    def progress(self, t_s: float) -> float:
        """Smooth progress in [0, 1] of the dynamic process at time ``t_s`` (s)."""
        return smoothstep(float(t_s) / self.duration_s)

    @property
    def is_static(self) -> bool:
        """True when the phantom does not change with time."""
        return False

    def frozen(self, t_s: float = 0.0) -> "FrozenPhantom":
        """A static copy of this phantom, fixed at its state at time ``t_s`` (s)."""
        return FrozenPhantom(self, t_s)

    def sample_fractions(
        self, t_s: float, shape: Sequence[int], spacing_nm: float
    ) -> dict[str, torch.Tensor]:
        """Element fractions (float32 torch tensors, shape ``shape`` = (Z, Y, X)) on a centred grid
        of ``spacing_nm`` nm, at time ``t_s`` (s). Only the particle's bounding box is evaluated."""
        shape = tuple(int(s) for s in shape)
        out = {el: torch.zeros(shape, dtype=torch.float32) for el in self.elements}
        reach = self.extent_radius_nm + 2.0 * spacing_nm
        axes, ranges = [], []
        for n in shape:
            coord = _axis_nm(n, spacing_nm)
            inside = np.flatnonzero(np.abs(coord) <= reach)
            if inside.size == 0:
                return out
            lo, hi = int(inside[0]), int(inside[-1]) + 1
            ranges.append((lo, hi))
            axes.append(torch.from_numpy(coord[lo:hi].astype(np.float32)))
        (z0, z1), (y0, y1), (x0, x1) = ranges
        zc, yc, xc = axes
        plane = (y1 - y0) * (x1 - x0)
        step = max(1, _CHUNK_POINTS // plane)
        y = yc.view(1, -1, 1)
        x = xc.view(1, 1, -1)
        for start in range(0, z1 - z0, step):
            z = zc[start : start + step].view(-1, 1, 1)
            fr = self._fractions_nm(float(t_s), z, y, x, float(spacing_nm))
            for el in self.elements:
                block = fr[el].expand(z.shape[0], y.shape[1], x.shape[2])
                out[el][z0 + start : z0 + start + z.shape[0], y0:y1, x0:x1] = block
        return out

    def sample_contrast(
        self, t_s: float, shape: Sequence[int], spacing_nm: float, *, exponent: float = 1.8
    ) -> torch.Tensor:
        """HAADF contrast ``Σ f_m (Z_m/79)^exponent`` (float32 torch, (Z, Y, X)) on a centred grid."""
        fr = self.sample_fractions(t_s, shape, spacing_nm)
        total = torch.zeros(tuple(int(s) for s in shape), dtype=torch.float32)
        for el, f in fr.items():
            total.add_(f, alpha=z_weight(el, exponent))
        return total

    def fractions(self, t_s: float, *, supersample: int = 1) -> dict[str, np.ndarray]:
        """Volume fraction of each element per voxel at time ``t_s`` (s): {element: (Z, Y, X) float32}.

        ``supersample`` > 1 evaluates an s×-finer grid and averages s³ samples per voxel.
        """
        s = int(supersample)
        if s < 1:
            raise ValueError(f"expected supersample >= 1, got {supersample}")
        fine = self.sample_fractions(t_s, [n * s for n in self.shape], self.voxel_nm / s)
        out = {}
        for el, f in fine.items():
            if s > 1:
                z, y, x = self.shape
                f = f.view(z, s, y, s, x, s).mean(dim=(1, 3, 5))
            out[el] = f.numpy().astype(np.float32, copy=False)
        return out

    def contrast(self, t_s: float, exponent: float = 1.8, *, supersample: int = 1) -> np.ndarray:
        """HAADF contrast volume (Z, Y, X) float32 at time ``t_s`` (s); voxels of pure gold are 1."""
        fr = self.fractions(t_s, supersample=supersample)
        total = np.zeros(self.shape, dtype=np.float32)
        for el, f in fr.items():
            total += np.float32(z_weight(el, exponent)) * f
        return total

    def occupancy(self, t_s: float, *, supersample: int = 1) -> np.ndarray:
        """Total metal volume fraction (Z, Y, X) float32 (sum over elements) at time ``t_s`` (s)."""
        return sum(self.fractions(t_s, supersample=supersample).values())  # type: ignore[return-value]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(shape={self.shape}, voxel_nm={self.voxel_nm:.4g}, "
            f"duration_s={self.duration_s:g})"
        )


class FrozenPhantom(Phantom):
    """A phantom held fixed at the state of ``base`` at time ``t_s``."""

    def __init__(self, base: Phantom, t_s: float = 0.0) -> None:
        self.base = base
        self.t_frozen_s = float(t_s)
        self.name = f"{base.name}@{self.t_frozen_s:g}s"
        self.elements = base.elements
        self.shape = base.shape
        self.voxel_nm = base.voxel_nm
        self.duration_s = base.duration_s

    @property
    def extent_radius_nm(self) -> float:
        return self.base.extent_radius_nm

    @property
    def is_static(self) -> bool:
        return True

    def progress(self, t_s: float) -> float:
        return self.base.progress(self.t_frozen_s)

    def frozen(self, t_s: float = 0.0) -> "FrozenPhantom":
        return self

    def _fractions_nm(self, t_s, z, y, x, spacing_nm):
        return self.base._fractions_nm(self.t_frozen_s, z, y, x, spacing_nm)


def sphere_volume_nm3(radius_nm: float) -> float:
    """Volume (nm³) of a sphere of radius ``radius_nm``."""
    return 4.0 / 3.0 * math.pi * radius_nm**3
