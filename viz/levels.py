"""Contrast levels (percentile auto-levels, or held) and the colormap of the slice panels.

:class:`DisplaySettings` has no lock and no Qt; the :class:`~tiltstream.viz.model.ViewModel` calls it
under its lock. They outlive a series.
"""

from __future__ import annotations

import math

from tiltstream.viz.colormaps import COLORMAPS, DEFAULT_COLORMAP

__all__ = ["DisplaySettings"]


class DisplaySettings:
    """Levels (low, high), whether they are held across updates, and the colormap name."""

    def __init__(self) -> None:
        self.levels: tuple[float, float] | None = None
        self.locked = False
        self.colormap = DEFAULT_COLORMAP

    def set_levels(self, low: float, high: float) -> None:
        """Levels by hand (e.g. dragging the histogram); this locks them."""
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"levels: expected finite low < high, got {low}, {high}")
        self.levels = (float(low), float(high))
        self.locked = True

    def auto(self, levels: tuple[float, float] | None) -> None:
        """Take percentile ``levels`` (computed from the slices drawn) unless the levels are locked."""
        if levels is not None and not self.locked:
            self.levels = levels

    def set_colormap(self, name: str) -> None:
        if name not in COLORMAPS:
            raise ValueError(f"colormap: expected one of {', '.join(COLORMAPS)}, got {name!r}")
        self.colormap = name
