"""Y-slabs: the unit of distributed reconstruction.

Volumes are (Z, Y, X) and frames (Y, U) with Y the tilt axis, so detector row ``y`` of every frame
sees only volume slice ``y``: each Y-slice is an independent 2-D problem. A slab is a run of rows
``[y0, y1)``; reconstructing the frames' rows ``y0:y1`` with the one-process core gives the volume's
rows ``y0:y1``, and FBP, SIRT, windowed and 4-D SIRT (which never couple rows) need no overlap
between slabs. This module only plans: pure functions, no dask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Slab", "plan_slabs", "slab_rows_for", "slab_frames"]


@dataclass(frozen=True)
class Slab:
    """Rows ``[y0, y1)`` of the frames and of the volume; ``index`` counts slabs from Y = 0."""

    index: int
    y0: int
    y1: int

    @property
    def rows(self) -> int:
        return self.y1 - self.y0

    @property
    def span(self) -> slice:
        return slice(self.y0, self.y1)


def plan_slabs(ny: int, rows: int) -> list[Slab]:
    """Slabs of ``rows`` detector rows (the last one shorter when ``rows`` does not divide ``ny``)
    covering ``[0, ny)`` once, in order. Equal slabs line up with chunks of ``rows`` rows on disk."""
    if ny < 1:
        raise ValueError(f"ny: expected ≥ 1 detector rows, got {ny}")
    if rows < 1:
        raise ValueError(f"slab rows: expected ≥ 1, got {rows}")
    return [Slab(i, y0, min(y0 + rows, ny)) for i, y0 in enumerate(range(0, ny, rows))]


def slab_rows_for(ny: int, workers: int, *, per_worker: int = 4, min_rows: int = 1) -> int:
    """Rows per slab giving about ``per_worker`` slabs to each of ``workers`` (so a slow or lost
    worker's share is small and the progress bar moves), and at least ``min_rows`` rows."""
    if workers < 1:
        raise ValueError(f"workers: expected ≥ 1, got {workers}")
    return max(int(min_rows), 1, math.ceil(ny / (workers * max(int(per_worker), 1))))


def slab_frames(frames: np.ndarray, slab: Slab) -> np.ndarray:
    """The slab's rows of every frame, (N, rows, U) float32 and C-contiguous (what a worker gets)."""
    if frames.ndim != 3:
        raise ValueError(f"frames: expected (N, Y, U), got shape {frames.shape}")
    if slab.y1 > frames.shape[1]:
        raise ValueError(f"slab {slab.index}: rows {slab.y0}:{slab.y1} outside the frames' {frames.shape[1]} rows")
    return np.ascontiguousarray(frames[:, slab.span], dtype=np.float32)
