"""``tiltstream simulate``: a simulated tilt series written as an NXtomo recording.

The recording's metadata carries everything needed to rebuild the ground truth
(:func:`truth_from_recording`), so results can be scored against the phantom they came from.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from tiltstream.sim import SimulatedSeries, TimingModel, make_phantom, simulate_series, tilt_scheme
from tiltstream.stream import TiltSeries, read_series, write_series

log = logging.getLogger(__name__)

__all__ = ["run", "simulated_tilt_series", "truth_from_recording", "to_tilt_series"]


def simulated_tilt_series(
    phantom: str = "nanorod",
    *,
    size: int = 64,
    n_frames: int = 240,
    scheme: str = "golden",
    tilt_range: tuple[float, float] = (-70.0, 70.0),
    dose_e_per_A2: float | None = None,
    duration_s: float | None = None,
    static: bool = False,
    exposure_s: float = 0.1,
    drift_px_per_s: float = 0.0,
    jitter_px: float = 0.0,
    axis_offset_px: float = 0.0,
    seed: int = 0,
) -> tuple[SimulatedSeries, dict]:
    """Simulate a series; returns it and the recipe (JSON-able) that rebuilds its phantom.

    ``duration_s`` is the length of the shape change; by default the whole acquisition, so the
    particle evolves from its start to its end state during the series.
    """
    lo, hi = tilt_range
    timing = TimingModel(exposure_s=exposure_s)
    if duration_s is None:
        _, mid, _ = timing.times(tilt_scheme(scheme, n_frames, lo=lo, hi=hi))
        duration_s = float(mid[-1] + 0.5 * exposure_s)
    ph = make_phantom(phantom, size=size, duration_s=duration_s, static=static)
    rng = np.random.default_rng(seed)
    sim = simulate_series(ph, n_frames=n_frames, scheme=scheme, lo=lo, hi=hi, timing=timing,
                          dose_e_per_A2=dose_e_per_A2, drift_px_per_s=drift_px_per_s, jitter_px=jitter_px,
                          axis_offset_px=axis_offset_px, rng=rng)
    recipe = {
        "phantom": phantom, "size": size, "voxel_nm": ph.voxel_nm, "duration_s": duration_s, "static": static,
        "exponent": sim.exponent, "scheme": scheme, "tilt_range_deg": [lo, hi], "dose_e_per_A2": dose_e_per_A2,
        "timing": asdict(timing), "drift_px_per_s": drift_px_per_s, "jitter_px": jitter_px,
        "axis_offset_px": axis_offset_px, "seed": seed,
    }
    return sim, recipe


def to_tilt_series(sim: SimulatedSeries, recipe: dict) -> TiltSeries:
    """The simulated series as a :class:`TiltSeries` with the recipe in ``metadata["simulation"]``."""
    return TiltSeries(
        frames=sim.frames,
        angles_deg=sim.angles_deg,
        times_s=sim.times_s,
        exposure_s=sim.exposure_s,
        pixel_nm=sim.pixel_nm,
        extra={"dose_e_per_A2": sim.dose_e_per_A2, "true_shift_px": sim.shifts_px},
        metadata={"simulation": recipe, "source": "tiltstream simulate"},
        source="tiltstream.sim",
    )


def run(args: argparse.Namespace) -> TiltSeries:
    if len(args.tilt_range) != 2:
        raise ValueError(f"--tilt-range: expected LO,HI, got {args.tilt_range}")
    sim, recipe = simulated_tilt_series(
        args.phantom, size=args.size, n_frames=args.frames, scheme=args.scheme,
        tilt_range=tuple(args.tilt_range), dose_e_per_A2=args.dose, duration_s=args.duration,
        static=args.static, exposure_s=args.exposure, drift_px_per_s=args.drift, jitter_px=args.jitter,
        axis_offset_px=args.axis_offset, seed=args.seed,
    )
    series = to_tilt_series(sim, recipe)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_series(args.out, series, overwrite=True)
    return series


def truth_from_recording(path: str | Path) -> Callable[[float], np.ndarray]:
    """``truth(t_s) -> (Z, Y, X)`` ground-truth contrast of the phantom a recording was simulated from."""
    series = read_series(path)
    recipe = series.metadata.get("simulation") or series.metadata.get("experiment", {}).get("simulation")
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: metadata 'simulation': expected the recipe of a tiltstream simulation, found none")
    ph = make_phantom(recipe["phantom"], size=recipe["size"], voxel_nm=recipe["voxel_nm"],
                      duration_s=recipe["duration_s"], static=recipe["static"])
    exponent = float(recipe["exponent"])
    return lambda t: ph.contrast(t, exponent)
