"""The recipe of a simulated tilt series: what builds its phantom, and the record that rebuilds it.

A :class:`Recipe` names the phantom, the tilt scheme and timing, the dose and the misalignments.
:meth:`Recipe.phantom_for` builds the (dynamic) phantom for a series ending at a given time, and
:meth:`Recipe.record` is the JSON-able record a recording or a ``start/1`` carries (in
``metadata["simulation"]``), from which :func:`truth_from_record` rebuilds the ground truth.
:func:`simulated_tilt_series` simulates a whole series offline; the live simulated microscope
(``tiltstream.acquire.SimulatedMicroscope``) renders the same frames chunk by chunk.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .phantom_base import Phantom
from .phantoms import make_phantom
from .schemes import TimingModel, tilt_scheme
from .series import SimulatedSeries, simulate_series

__all__ = ["EXPONENT", "Recipe", "simulated_tilt_series", "truth_from_record"]

#: HAADF Z-exponent of every simulated series.
EXPONENT = 1.8


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """A simulated tilt series.

    Attributes
    ----------
    phantom : ``"nanorod"``, ``"nanostar"``, ``"core_shell"`` or ``"sintering"``.
    size : phantom grid edge, voxels.
    scheme, tilt_range_deg : tilt scheme and range (lo, hi), degrees.
    dose_e_per_A2 : dose per frame, e⁻/Å²; None for noise-free frames.
    duration_s : length of the shape change, s; None: the whole acquisition.
    static : freeze the phantom.
    timing : stage/camera timing model.
    drift_px_per_s, jitter_px, axis_offset_px : specimen drift, jitter and tilt-axis offset, pixels.
    seed : seed of the random stream (drift, jitter, noise).
    """

    phantom: str = "nanorod"
    size: int = 64
    scheme: str = "golden"
    tilt_range_deg: tuple[float, float] = (-70.0, 70.0)
    dose_e_per_A2: float | None = None
    duration_s: float | None = None
    static: bool = False
    timing: TimingModel = dataclasses.field(default_factory=TimingModel)
    drift_px_per_s: float = 0.0
    jitter_px: float = 0.0
    axis_offset_px: float = 0.0
    seed: int = 0

    def phantom_for(self, series_end_s: float) -> Phantom:
        """The phantom of a series whose last exposure ends at ``series_end_s`` (s); it changes shape
        over ``duration_s``, by default over the whole series."""
        duration = series_end_s if self.duration_s is None else self.duration_s
        return make_phantom(self.phantom, size=self.size, duration_s=float(duration), static=self.static)

    def record(self, phantom: Phantom) -> dict[str, Any]:
        """The JSON-able record of this recipe with its built ``phantom`` (see :func:`truth_from_record`)."""
        lo, hi = (float(v) for v in self.tilt_range_deg)
        return {
            "phantom": self.phantom, "size": int(self.size), "voxel_nm": phantom.voxel_nm,
            "duration_s": float(phantom.duration_s), "static": bool(self.static), "exponent": EXPONENT,
            "scheme": self.scheme, "tilt_range_deg": [lo, hi],
            "dose_e_per_A2": None if self.dose_e_per_A2 is None else float(self.dose_e_per_A2),
            "timing": dataclasses.asdict(self.timing), "drift_px_per_s": float(self.drift_px_per_s),
            "jitter_px": float(self.jitter_px), "axis_offset_px": float(self.axis_offset_px), "seed": int(self.seed),
        }


def simulated_tilt_series(
    phantom: str = "nanorod",
    *,
    n_frames: int = 240,
    exposure_s: float = 0.1,
    tilt_range: tuple[float, float] = (-70.0, 70.0),
    **recipe: Any,
) -> tuple[SimulatedSeries, dict[str, Any]]:
    """Simulate a series of ``n_frames``; returns it and its record (:meth:`Recipe.record`).

    ``recipe`` holds the other :class:`Recipe` fields; the timing is ``TimingModel(exposure_s=...)``.
    """
    r = Recipe(phantom=phantom, tilt_range_deg=tuple(tilt_range), timing=TimingModel(exposure_s=exposure_s),
               **recipe)
    lo, hi = r.tilt_range_deg
    _, mid, _ = r.timing.times(tilt_scheme(r.scheme, n_frames, lo=lo, hi=hi))
    ph = r.phantom_for(float(mid[-1] + 0.5 * exposure_s))
    sim = simulate_series(ph, n_frames=n_frames, scheme=r.scheme, lo=lo, hi=hi, timing=r.timing,
                          dose_e_per_A2=r.dose_e_per_A2, exponent=EXPONENT, drift_px_per_s=r.drift_px_per_s,
                          jitter_px=r.jitter_px, axis_offset_px=r.axis_offset_px,
                          rng=np.random.default_rng(r.seed))
    return sim, r.record(ph)


def truth_from_record(record: Mapping[str, Any]) -> Callable[[float], np.ndarray]:
    """``truth(t_s) -> (Z, Y, X)`` ground-truth contrast of the phantom a :meth:`Recipe.record` describes."""
    missing = [k for k in ("phantom", "size", "voxel_nm", "duration_s", "static", "exponent") if k not in record]
    if missing:
        raise ValueError(f"simulation record: expected the keys {', '.join(missing)}, got {sorted(record)}")
    ph = make_phantom(record["phantom"], size=record["size"], voxel_nm=record["voxel_nm"],
                      duration_s=record["duration_s"], static=record["static"])
    exponent = float(record["exponent"])
    return lambda t: ph.contrast(t, exponent)
