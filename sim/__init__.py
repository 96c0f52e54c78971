"""Simulator: tilt schemes and timing, dynamic nanoparticle phantoms, the HAADF forward model,
noise and drift, a one-call tilt-series simulation and its recipe (which rebuilds the ground truth).

Conventions: volumes (Z, Y, X) with Y the tilt axis; frames (Y, U); at tilt θ the detector
coordinate is ``u = x·cosθ + z·sinθ`` (voxel units, centred). Angles in degrees, times in s, sizes
in nm, dose in e⁻/Å². Depends only on numpy, scipy and torch.
"""

from .forward import project
from .noise import drift_shifts, poisson_noise
from .misalign import rotate_tilt_axis
from .phantom_base import ATOMIC_NUMBERS, FrozenPhantom, Phantom, z_weight
from .phantoms import PHANTOMS, CoreShell, NanoRod, NanoStar, Sintering, make_phantom
from .schemes import (
    GOLDEN_RATIO,
    TimingModel,
    golden_ratio_angles,
    incremental_angles,
    linear_angles,
    tilt_scheme,
)
from .series import SimulatedSeries, simulate_series
from .recipe import Recipe, simulated_tilt_series, truth_from_record

__all__ = [
    "ATOMIC_NUMBERS",
    "CoreShell",
    "FrozenPhantom",
    "GOLDEN_RATIO",
    "NanoRod",
    "NanoStar",
    "PHANTOMS",
    "Phantom",
    "Recipe",
    "SimulatedSeries",
    "Sintering",
    "TimingModel",
    "drift_shifts",
    "golden_ratio_angles",
    "incremental_angles",
    "linear_angles",
    "make_phantom",
    "poisson_noise",
    "project",
    "rotate_tilt_axis",
    "simulate_series",
    "simulated_tilt_series",
    "tilt_scheme",
    "truth_from_record",
    "z_weight",
]
