"""``tiltstream simulate``: a simulated tilt series written as an NXtomo recording.

The series is :func:`tiltstream.sim.recipe.simulated_tilt_series`; the recording's metadata carries
its recipe, from which :func:`truth_from_recording` rebuilds the ground truth, so results can be
scored against the phantom they came from.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tiltstream.sim.recipe import simulated_tilt_series, truth_from_record
from tiltstream.stream import TiltSeries, read_series, write_series

__all__ = ["run", "truth_from_recording"]


def run(args: argparse.Namespace) -> TiltSeries:
    """Simulate the series the options describe and write it to ``args.out``; returns it."""
    sim, recipe = simulated_tilt_series(
        args.phantom, size=args.size, n_frames=args.frames, scheme=args.scheme,
        tilt_range=args.tilt_range, dose_e_per_A2=args.dose, duration_s=args.duration,
        static=args.static, exposure_s=args.exposure, drift_px_per_s=args.drift, jitter_px=args.jitter,
        axis_offset_px=args.axis_offset, seed=args.seed,
    )
    series = TiltSeries(
        frames=sim.frames,
        angles_deg=sim.angles_deg,
        times_s=sim.times_s,
        exposure_s=sim.exposure_s,
        pixel_nm=sim.pixel_nm,
        extra={k: v for k, v in (("dose_e_per_A2", sim.dose_e_per_A2), ("true_shift_px", sim.shifts_px)) if v is not None},
        metadata={"simulation": recipe, "source": "tiltstream simulate"},
        source="tiltstream.sim",
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_series(args.out, series, overwrite=True)
    return series


def truth_from_recording(path: str | Path) -> Callable[[float], np.ndarray]:
    """``truth(t_s) -> (Z, Y, X)`` ground-truth contrast of the phantom a recording was simulated from."""
    series = read_series(path)
    recipe = series.metadata.get("simulation") or series.metadata.get("experiment", {}).get("simulation")
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: metadata 'simulation': expected the recipe of a tiltstream simulation, found none")
    return truth_from_record(recipe)
