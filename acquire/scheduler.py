"""Tilt scheduling: which angle frame n is taken at and when, for N frames or without end.

Angles come from the schemes of :mod:`tiltstream.sim.schemes` (golden ratio by default:
``θₙ = lo + (hi − lo)·frac(n·φ)``), times from its stage/camera :class:`~tiltstream.sim.TimingModel`
(first exposure starts at t = 0 s). An endless schedule is computed in chunks whose times equal,
to rounding, those of one long :meth:`TimingModel.times` call.

Example::

    for angle_deg, t_s in golden_schedule(240):          # (degrees, mid-exposure seconds)
        ...
    for frame in TiltScheduler("golden", timing=TimingModel(exposure_s=0.2)):   # endless
        stage.tilt_to(frame.angle_deg); wait_until(frame.start_s); ...
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiltstream.sim import TimingModel, tilt_scheme

__all__ = ["PlannedFrame", "Schedule", "TiltScheduler", "golden_schedule"]


@dataclass(frozen=True)
class PlannedFrame:
    """One planned frame.

    Attributes
    ----------
    index : frame number n (0, 1, ...).
    angle_deg : nominal tilt angle, degrees.
    t_s : planned mid-exposure time, seconds since the first exposure started.
    start_s : planned exposure start, s.
    exposure_s : exposure, s.
    tilt_speed_deg_s : stage speed during the exposure, degree/s (0 for step-and-shoot).
    """

    index: int
    angle_deg: float
    t_s: float
    start_s: float
    exposure_s: float
    tilt_speed_deg_s: float

    @property
    def end_s(self) -> float:
        """Planned end of the exposure, s: when the frame can exist."""
        return self.start_s + self.exposure_s


@dataclass(frozen=True)
class Schedule:
    """A block of planned frames as arrays, each (n,) float64 (``index`` int64)."""

    index: np.ndarray
    angles_deg: np.ndarray
    times_s: np.ndarray
    starts_s: np.ndarray
    exposure_s: np.ndarray
    tilt_speed_deg_s: np.ndarray

    def __len__(self) -> int:
        return int(self.index.size)

    def frame(self, i: int) -> PlannedFrame:
        """The ``i``-th frame of this block."""
        return PlannedFrame(
            int(self.index[i]), float(self.angles_deg[i]), float(self.times_s[i]),
            float(self.starts_s[i]), float(self.exposure_s[i]), float(self.tilt_speed_deg_s[i]),
        )


class TiltScheduler:
    """Plans angles and times of frames 0, 1, 2, ... for a tilt scheme and a timing model.

    Parameters
    ----------
    scheme : ``"golden"``, ``"linear"`` or ``"incremental"`` (see :func:`tiltstream.sim.tilt_scheme`).
    n_frames : number of frames; None for an endless schedule (iterate and stop when done).
    tilt_range_deg : (lo, hi) tilt range, degrees.
    timing : stage/camera timing (default ``TimingModel()``: continuous tilting, 0.1 s exposure).
    chunk : frames planned per block of an endless schedule.
    scheme_kw : further keywords of the scheme (``step_deg``, ``n_interlace``). An endless
        ``"linear"`` schedule needs ``step_deg`` (its default depends on the frame count).
    """

    def __init__(
        self,
        scheme: str = "golden",
        *,
        n_frames: int | None = None,
        tilt_range_deg: tuple[float, float] = (-70.0, 70.0),
        timing: TimingModel | None = None,
        chunk: int = 256,
        **scheme_kw: Any,
    ) -> None:
        if n_frames is not None and (int(n_frames) != n_frames or n_frames < 0):
            raise ValueError(f"n_frames: expected a non-negative integer or None, got {n_frames!r}")
        if int(chunk) < 1:
            raise ValueError(f"chunk: expected a positive number of frames, got {chunk}")
        lo, hi = (float(v) for v in tilt_range_deg)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"tilt_range_deg: expected finite lo < hi in degrees, got {tilt_range_deg!r}")
        if n_frames is None and scheme == "linear" and scheme_kw.get("step_deg") is None:
            raise ValueError("an endless 'linear' schedule needs step_deg (its default depends on n_frames)")
        self.scheme = scheme
        self.n_frames = None if n_frames is None else int(n_frames)
        self.tilt_range_deg = (lo, hi)
        self.timing = TimingModel() if timing is None else timing
        self.chunk = int(chunk)
        self.scheme_kw = dict(scheme_kw)
        tilt_scheme(scheme, 2, lo=lo, hi=hi, **self.scheme_kw)  # unknown scheme / bad keywords fail now
        self._full: Schedule | None = None

    def _angles(self, n: int) -> np.ndarray:
        lo, hi = self.tilt_range_deg
        return tilt_scheme(self.scheme, n, lo=lo, hi=hi, **self.scheme_kw)

    def _table(self, n: int) -> Schedule:
        angles = self._angles(n)
        starts, mids, exposure = self.timing.times(angles)
        return Schedule(np.arange(n, dtype=np.int64), angles, mids, starts, exposure, self.timing.tilt_speeds(angles))

    def plan(self, n: int | None = None) -> Schedule:
        """Frames 0 … n−1 as arrays (default: all ``n_frames``; required for an endless schedule)."""
        if n is None:
            if self.n_frames is None:
                raise ValueError("plan: expected a frame count for an endless schedule, got None")
            n = self.n_frames
        if self.n_frames is not None:
            if n > self.n_frames:
                raise ValueError(f"plan: expected at most {self.n_frames} frames, got {n}")
            if self._full is None:
                self._full = self._table(self.n_frames)
            return Schedule(*(getattr(self._full, f)[:n] for f in Schedule.__dataclass_fields__))
        return self._table(int(n))

    def blocks(self) -> Iterator[Schedule]:
        """Consecutive blocks of planned frames (one block for a finite schedule)."""
        if self.n_frames is not None:
            yield self.plan()
            return
        prev: Schedule | None = None
        a = 0
        while True:
            b = a + self.chunk
            if prev is None:
                # one frame of look-ahead: frame 0's stage speed depends on the move to frame 1
                ahead = self._table(b + 1)
                block = Schedule(*(getattr(ahead, f)[:b] for f in Schedule.__dataclass_fields__))
            else:
                block = self._continue(self._angles(b), a, prev)
            yield block
            prev, a = block, b

    def _continue(self, angles: np.ndarray, a: int, prev: Schedule) -> Schedule:
        """Frames a … b−1 timed as the continuation of ``prev`` (which ends with frame a−1)."""
        # Context back to the last real move before frame a, so that direction reversals
        # (backlash pauses) are judged as in one long TimingModel.times call.
        c = max(a - 2, 0)
        while c > 0 and angles[c + 1] == angles[c]:
            c -= 1
        window = angles[c:]
        starts, _, exposure = self.timing.times(window)
        speeds = self.timing.tilt_speeds(window)
        k = a - c  # position of frame a in the window
        starts = float(prev.starts_s[-1]) + (starts[k:] - starts[k - 1])
        index = np.arange(a, angles.size, dtype=np.int64)
        return Schedule(index, angles[a:].copy(), starts + 0.5 * exposure[k:], starts, exposure[k:], speeds[k:])

    def __iter__(self) -> Iterator[PlannedFrame]:
        for block in self.blocks():
            for i in range(len(block)):
                yield block.frame(i)


def golden_schedule(
    n_frames: int | None = None,
    *,
    tilt_range_deg: tuple[float, float] = (-70.0, 70.0),
    timing: TimingModel | None = None,
) -> Iterator[tuple[float, float]]:
    """Golden-ratio ``(angle_deg, t_s)`` pairs: tilt angle (degrees) and planned mid-exposure time
    (s) of frames 0, 1, ...; ``n_frames=None`` never ends."""
    for frame in TiltScheduler("golden", n_frames=n_frames, tilt_range_deg=tilt_range_deg, timing=timing):
        yield frame.angle_deg, frame.t_s
