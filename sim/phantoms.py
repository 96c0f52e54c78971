"""Dynamic nanoparticle phantoms and their registry.

Every phantom is centred on the grid, sized in nm, and changes smoothly over ``duration_s`` seconds
following :meth:`Phantom.progress` (a smoothstep from 0 at t = 0 to 1 at t = duration_s; frozen after).

- ``nanorod``: gold spherocylinder reshaping toward a sphere at constant volume.
- ``nanostar``: gold sphere with conical tips retracting.
- ``core_shell`` (alias ``au_ag``): Au sphere inside a rounded Ag cube; Au and Ag interdiffuse.
- ``sintering``: two touching gold spheres growing a neck and merging into one.
"""

from __future__ import annotations

import functools
import logging
import math
from typing import Any, Sequence

import numpy as np
import torch
from scipy.optimize import brentq

from .phantom_base import Phantom, sphere_volume_nm3
from .shapes import (
    occupancy,
    rotation_matrix,
    sd_capsule,
    sd_round_box,
    sd_round_cone,
    sd_sphere,
    smooth_min,
    unit,
)

log = logging.getLogger(__name__)

__all__ = ["CoreShell", "NanoRod", "NanoStar", "PHANTOMS", "Sintering", "make_phantom"]

_PROGRESS_GRID = np.linspace(0.0, 1.0, 201)


class NanoRod(Phantom):
    """Gold spherocylinder relaxing toward a sphere at constant volume.

    The rod axis lies in the X–Y plane, ``axis_tilt_deg`` away from the tilt axis (Y), optionally
    raised ``axis_elevation_deg`` toward Z. Its aspect ratio (total length / diameter) goes linearly in
    progress from ``length_nm/diameter_nm`` to ``final_aspect`` (1 = sphere); radius and length follow
    from the constant volume ``V = π r² (L − 2r) + 4/3 π r³``.
    """

    name = "nanorod"
    elements = ("Au",)

    def __init__(
        self,
        shape: Sequence[int],
        voxel_nm: float | None = None,
        duration_s: float = 60.0,
        *,
        length_nm: float = 40.0,
        diameter_nm: float = 12.0,
        final_aspect: float = 1.0,
        axis_tilt_deg: float = 30.0,
        axis_elevation_deg: float = 0.0,
    ) -> None:
        if not length_nm >= diameter_nm > 0:
            raise ValueError(f"expected length_nm >= diameter_nm > 0, got {length_nm}, {diameter_nm}")
        if final_aspect < 1.0:
            raise ValueError(f"expected final_aspect >= 1, got {final_aspect}")
        self.aspect0 = length_nm / diameter_nm
        self.final_aspect = float(final_aspect)
        r0 = diameter_nm / 2.0
        self._volume = math.pi * r0**2 * (length_nm - 2 * r0) + sphere_volume_nm3(r0)
        tilt, elev = math.radians(axis_tilt_deg), math.radians(axis_elevation_deg)
        self.axis = unit((math.sin(elev), math.cos(elev) * math.cos(tilt), math.cos(elev) * math.sin(tilt)))
        super().__init__(shape, voxel_nm, duration_s)

    def aspect_ratio(self, t_s: float) -> float:
        """Total length / diameter at time ``t_s`` (s)."""
        return self.aspect0 + (self.final_aspect - self.aspect0) * self.progress(t_s)

    def _radius(self, aspect: float) -> float:
        return (self._volume / (math.pi * (2.0 * aspect - 2.0 / 3.0))) ** (1.0 / 3.0)

    def radius_nm(self, t_s: float) -> float:
        """Rod radius (nm) at time ``t_s`` (s)."""
        return self._radius(self.aspect_ratio(t_s))

    def length_nm(self, t_s: float) -> float:
        """Total tip-to-tip length (nm) at time ``t_s`` (s)."""
        return 2.0 * self.radius_nm(t_s) * self.aspect_ratio(t_s)

    def volume_nm3(self, t_s: float) -> float:
        """Analytic volume (nm³) at time ``t_s`` (s), from the current radius and length."""
        r, length = self.radius_nm(t_s), self.length_nm(t_s)
        return math.pi * r**2 * (length - 2.0 * r) + sphere_volume_nm3(r)

    @functools.cached_property
    def extent_radius_nm(self) -> float:
        aspects = self.aspect0 + (self.final_aspect - self.aspect0) * _PROGRESS_GRID
        return float(max(self._radius(a) * a for a in aspects))

    def _fractions_nm(self, t_s, z, y, x, spacing_nm):
        r, length = self.radius_nm(t_s), self.length_nm(t_s)
        half = 0.5 * (length - 2.0 * r) * self.axis
        sdf = sd_capsule(z, y, x, -half, half, r)
        return {"Au": occupancy(sdf, spacing_nm)}


def _fibonacci_directions(n: int, rotation_deg: Sequence[float]) -> np.ndarray:
    """(n, 3) unit (z, y, x) vectors spread evenly over the sphere, then rotated."""
    i = np.arange(n) + 0.5
    yy = 1.0 - 2.0 * i / n
    rr = np.sqrt(1.0 - yy**2)
    phi = np.pi * (3.0 - math.sqrt(5.0)) * np.arange(n)
    dirs = np.stack([rr * np.cos(phi), yy, rr * np.sin(phi)], axis=1)
    return dirs @ rotation_matrix(rotation_deg).T


class NanoStar(Phantom):
    """Gold sphere core with round conical tips whose length retracts over time.

    Tip k points along a Fibonacci-sphere direction; its base sphere (``tip_base_radius_nm``) sits
    just inside the core and its apex sphere (``tip_apex_radius_nm``) ends ``tip_length_nm·(1 −
    retract·progress)`` beyond the core surface. Core and tips are joined with a ``fillet_nm`` fillet.
    """

    name = "nanostar"
    elements = ("Au",)

    def __init__(
        self,
        shape: Sequence[int],
        voxel_nm: float | None = None,
        duration_s: float = 60.0,
        *,
        core_radius_nm: float = 10.0,
        n_tips: int = 7,
        tip_length_nm: float = 14.0,
        tip_base_radius_nm: float = 4.5,
        tip_apex_radius_nm: float = 1.0,
        retract: float = 0.85,
        fillet_nm: float = 1.5,
        orientation_deg: Sequence[float] = (17.0, 29.0, 41.0),
    ) -> None:
        if not 0.0 <= retract <= 1.0:
            raise ValueError(f"expected 0 <= retract <= 1, got {retract}")
        if not core_radius_nm > tip_base_radius_nm > tip_apex_radius_nm > 0:
            raise ValueError("expected core_radius_nm > tip_base_radius_nm > tip_apex_radius_nm > 0")
        self.core_radius = float(core_radius_nm)
        self.tip_length0 = float(tip_length_nm)
        self.tip_base_radius = float(tip_base_radius_nm)
        self.tip_apex_radius = float(tip_apex_radius_nm)
        self.retract = float(retract)
        self.fillet = float(fillet_nm)
        self.directions = _fibonacci_directions(int(n_tips), orientation_deg)
        super().__init__(shape, voxel_nm, duration_s)

    def tip_length_nm(self, t_s: float) -> float:
        """Tip length beyond the core surface (nm) at time ``t_s`` (s)."""
        return self.tip_length0 * (1.0 - self.retract * self.progress(t_s))

    @property
    def extent_radius_nm(self) -> float:
        return self.core_radius + self.tip_length0 + self.fillet

    def _fractions_nm(self, t_s, z, y, x, spacing_nm):
        length = max(self.tip_length_nm(t_s), 1e-3)
        ra, rb = self.tip_base_radius, self.tip_apex_radius
        sdf = sd_sphere(z, y, x, (0.0, 0.0, 0.0), self.core_radius)
        tips = None
        for d in self.directions:
            tip = sd_round_cone(
                z, y, x, (self.core_radius - ra) * d, (self.core_radius + length - rb) * d, ra, rb
            )
            tips = tip if tips is None else torch.minimum(tips, tip)
        if tips is not None:
            sdf = smooth_min(sdf, tips, self.fillet)
        return {"Au": occupancy(sdf, spacing_nm)}


def _ball_diffusion_profile(r: torch.Tensor, radius: float, length: float) -> torch.Tensor:
    """Fraction of a uniform ball (``radius`` nm) after diffusion with length ``length`` = 2√(Dt) nm,
    at distance ``r`` nm from its centre (exact solution in an infinite medium, Crank eq. 3.8)."""
    r = torch.clamp(r, min=1e-6)
    a, ell = float(radius), float(length)
    erfs = 0.5 * (torch.erf((a + r) / ell) + torch.erf((a - r) / ell))
    xarg = 2.0 * a * r / ell**2
    direct = (ell / (2.0 * math.sqrt(math.pi) * r)) * (
        torch.exp(-((a - r) ** 2) / ell**2) - torch.exp(-((a + r) ** 2) / ell**2)
    )
    series = (2.0 * a / (math.sqrt(math.pi) * ell)) * torch.exp(-(a * a + r * r) / ell**2) * (1 + xarg**2 / 6)
    return torch.clamp(erfs - torch.where(xarg < 1e-3, series, direct), 0.0, 1.0)


class CoreShell(Phantom):
    """Au core sphere in a rounded Ag cube; the two metals interdiffuse, the outer shape stays.

    The Au fraction is the ball-diffusion profile around the (slightly off-centre) core with diffusion
    length ``diffusion_nm·progress``; the Au that would diffuse past the outer surface is returned as a
    uniform offset so the total Au stays constant (to the clip at fraction 1). Late times approach a
    homogeneous alloy.
    """

    name = "core_shell"
    elements = ("Au", "Ag")

    def __init__(
        self,
        shape: Sequence[int],
        voxel_nm: float | None = None,
        duration_s: float = 60.0,
        *,
        core_radius_nm: float = 8.0,
        shell_half_nm: float = 13.0,
        rounding_nm: float = 3.0,
        core_offset_nm: Sequence[float] = (1.5, -1.0, 2.0),
        diffusion_nm: float = 10.0,
        orientation_deg: Sequence[float] = (20.0, 35.0, 10.0),
    ) -> None:
        if np.linalg.norm(core_offset_nm) + core_radius_nm > shell_half_nm:
            raise ValueError("expected the Au core to lie inside the Ag shell")
        if not shell_half_nm > rounding_nm >= 0:
            raise ValueError(f"expected shell_half_nm > rounding_nm >= 0, got {shell_half_nm}, {rounding_nm}")
        self.core_radius = float(core_radius_nm)
        self.shell_half = float(shell_half_nm)
        self.rounding = float(rounding_nm)
        self.core_offset = tuple(float(v) for v in core_offset_nm)
        self.diffusion_nm = float(diffusion_nm)
        self.rotation = rotation_matrix(orientation_deg)
        self._amounts: dict[float, float] = {}
        super().__init__(shape, voxel_nm, duration_s)

    @property
    def extent_radius_nm(self) -> float:
        return math.sqrt(3.0) * (self.shell_half - self.rounding) + self.rounding

    def diffusion_length_nm(self, t_s: float) -> float:
        """Diffusion length 2√(Dt) (nm) reached at time ``t_s`` (s)."""
        return self.diffusion_nm * self.progress(t_s)

    def _profile_length(self, t_s: float, spacing_nm: float) -> float:
        # Blur the core edge by about one sample so the t = 0 step is anti-aliased too.
        return math.hypot(self.diffusion_length_nm(t_s), 0.56 * spacing_nm)

    def _shell(self, z, y, x, spacing_nm):
        sdf = sd_round_box(z, y, x, (0.0, 0.0, 0.0), (self.shell_half,) * 3, self.rounding, self.rotation)
        return occupancy(sdf, spacing_nm)

    @functools.cached_property
    def _quadrature(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Shell occupancy and distance to the core centre (nm) on a 48³ grid in the cube's frame."""
        n = 48
        h = 2.0 * self.shell_half / n
        ax = torch.from_numpy(((np.arange(n) - (n - 1) / 2.0) * h).astype(np.float32))
        z, y, x = ax.view(-1, 1, 1), ax.view(1, -1, 1), ax.view(1, 1, -1)
        rt = self.rotation  # cube frame -> grid coordinates
        g = [z * rt[i, 0] + y * rt[i, 1] + x * rt[i, 2] for i in range(3)]
        occ = self._shell(*g, h)
        r = torch.sqrt(sum((gi - c) ** 2 for gi, c in zip(g, self.core_offset)))
        return occ, r

    def _au_amount(self, ell: float) -> float:
        """Au inside the shell (quadrature units) for profile length ``ell`` nm, before the offset."""
        key = round(ell, 6)
        if key not in self._amounts:
            occ, r = self._quadrature
            self._amounts[key] = float((occ * _ball_diffusion_profile(r, self.core_radius, ell)).sum())
        return self._amounts[key]

    def _au_offset(self, ell: float, ell0: float) -> float:
        """Uniform Au fraction that restores the Au lost through the outer surface."""
        occ, _ = self._quadrature
        return max(self._au_amount(ell0) - self._au_amount(ell), 0.0) / float(occ.sum())

    def _fractions_nm(self, t_s, z, y, x, spacing_nm):
        occ = self._shell(z, y, x, spacing_nm)
        ell = self._profile_length(t_s, spacing_nm)
        ell0 = self._profile_length(0.0, spacing_nm)
        r = torch.sqrt(sum((g - c) ** 2 for g, c in zip((z, y, x), self.core_offset)))
        au = _ball_diffusion_profile(r, self.core_radius, ell) + self._au_offset(ell, ell0)
        au = torch.clamp(au, 0.0, 1.0)
        return {"Au": occ * au, "Ag": occ * (1.0 - au)}


def _union_volume(r1: float, r2: float, d: float) -> float:
    """Volume (nm³) of the union of spheres of radii r1, r2 whose centres are d apart."""
    v1, v2 = sphere_volume_nm3(r1), sphere_volume_nm3(r2)
    if d >= r1 + r2:
        return v1 + v2
    if d <= abs(r1 - r2):
        return max(v1, v2)
    lens = math.pi * (r1 + r2 - d) ** 2 * (d * d + 2 * d * (r1 + r2) - 3 * (r1 - r2) ** 2) / (12 * d)
    return v1 + v2 - lens


class Sintering(Phantom):
    """Two touching gold spheres that grow a neck and merge toward one sphere.

    The centre distance shrinks from ``r1 + r2`` (touching) to ``final_separation·(r1 + r2)``; both
    radii are scaled so the union of the two spheres keeps the initial total volume exactly, and the
    spheres are joined by a ``fillet_nm`` fillet (which adds a little volume at the neck).
    """

    name = "sintering"
    elements = ("Au",)

    def __init__(
        self,
        shape: Sequence[int],
        voxel_nm: float | None = None,
        duration_s: float = 60.0,
        *,
        radii_nm: Sequence[float] = (9.0, 7.0),
        axis: Sequence[float] = (0.3, 0.5, 0.8),
        final_separation: float = 0.0,
        fillet_nm: float = 2.0,
    ) -> None:
        r1, r2 = (float(r) for r in radii_nm)
        if not (r1 > 0 and r2 > 0):
            raise ValueError(f"expected positive radii, got {radii_nm}")
        if not 0.0 <= final_separation <= 1.0:
            raise ValueError(f"expected 0 <= final_separation <= 1, got {final_separation}")
        self.radii = (r1, r2)
        self.axis = unit(axis)
        self.final_separation = float(final_separation)
        self.fillet = float(fillet_nm)
        self._volume = sphere_volume_nm3(r1) + sphere_volume_nm3(r2)
        super().__init__(shape, voxel_nm, duration_s)

    def _geometry(self, p: float) -> tuple[float, float]:
        """Radius scale factor and centre distance (nm) at progress ``p``."""
        r1, r2 = self.radii
        d = (r1 + r2) * (1.0 - (1.0 - self.final_separation) * p)
        if _union_volume(r1, r2, d) >= self._volume * (1 - 1e-12):
            return 1.0, d
        top = (self._volume / sphere_volume_nm3(max(r1, r2))) ** (1.0 / 3.0) + 1e-9
        s = brentq(lambda s: _union_volume(s * r1, s * r2, d) - self._volume, 1.0, top, xtol=1e-12)
        return s, d

    def centres_nm(self, t_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Centres (z, y, x) in nm of the two spheres at time ``t_s`` (s)."""
        return self._centres(self.progress(t_s))

    def _centres(self, p: float) -> tuple[np.ndarray, np.ndarray]:
        d = self._geometry(p)[1]
        v1, v2 = (r**3 for r in self.radii)
        w1 = v1 / (v1 + v2)
        return -d * (1.0 - w1) * self.axis, d * w1 * self.axis

    def radii_nm(self, t_s: float) -> tuple[float, float]:
        """Current sphere radii (nm) at time ``t_s`` (s)."""
        s = self._geometry(self.progress(t_s))[0]
        return s * self.radii[0], s * self.radii[1]

    def volume_nm3(self, t_s: float) -> float:
        """Analytic volume (nm³) of the sphere union at ``t_s`` (s), without the fillet."""
        s, d = self._geometry(self.progress(t_s))
        return _union_volume(s * self.radii[0], s * self.radii[1], d)

    def neck_radius_nm(self, t_s: float) -> float:
        """Radius (nm) of the narrowest cross-section between the two centres (sphere union, no
        fillet); 0 while the spheres only touch, grows as they merge."""
        s, d = self._geometry(self.progress(t_s))
        r1, r2 = s * self.radii[0], s * self.radii[1]
        if d >= r1 + r2:
            return 0.0
        if d <= 1e-9:
            return max(r1, r2)
        big, small = max(r1, r2), min(r1, r2)
        xi = (d * d + big * big - small * small) / (2.0 * d)  # intersection plane from the big centre
        if 0.0 <= xi <= d:
            return math.sqrt(max(big * big - xi * xi, 0.0))
        return max(math.sqrt(max(big * big - d * d, 0.0)), small)

    @functools.cached_property
    def extent_radius_nm(self) -> float:
        best = 0.0
        for p in _PROGRESS_GRID:
            s = self._geometry(float(p))[0]
            c1, c2 = self._centres(float(p))
            best = max(best, np.linalg.norm(c1) + s * self.radii[0], np.linalg.norm(c2) + s * self.radii[1])
        return float(best) + 0.25 * self.fillet

    def _fractions_nm(self, t_s, z, y, x, spacing_nm):
        c1, c2 = self.centres_nm(t_s)
        r1, r2 = self.radii_nm(t_s)
        sdf = smooth_min(sd_sphere(z, y, x, c1, r1), sd_sphere(z, y, x, c2, r2), self.fillet)
        return {"Au": occupancy(sdf, spacing_nm)}


PHANTOMS: dict[str, type[Phantom]] = {
    "nanorod": NanoRod,
    "nanostar": NanoStar,
    "core_shell": CoreShell,
    "au_ag": CoreShell,
    "sintering": Sintering,
}
"""Phantom classes by name ("au_ag" is an alias of "core_shell")."""


def make_phantom(
    name: str,
    *,
    size: int = 64,
    shape: Sequence[int] | None = None,
    voxel_nm: float | None = None,
    duration_s: float = 60.0,
    static: bool = False,
    **kw: Any,
) -> Phantom:
    """Build the phantom ``name`` on a ``size``³ grid (or ``shape`` = (Z, Y, X)).

    ``voxel_nm`` defaults so that the particle's largest extent fills 60 % of the smallest grid side.
    ``duration_s`` (s) is the length of the dynamic process; ``static=True`` returns the phantom frozen
    at t = 0. Remaining keywords go to the phantom class (see :data:`PHANTOMS`).
    """
    try:
        cls = PHANTOMS[name]
    except KeyError:
        raise ValueError(f"expected a phantom in {sorted(PHANTOMS)}, got {name!r}") from None
    grid = tuple(shape) if shape is not None else (int(size),) * 3
    phantom = cls(grid, voxel_nm, duration_s, **kw)
    log.debug("made %r", phantom)
    return phantom.frozen(0.0) if static else phantom
