"""Real-time pacing for frame sources: send frame k when the wall clock reaches its time / speed."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

__all__ = ["parse_speed", "Pacer"]


def parse_speed(speed: float | str) -> float:
    """Playback speed as a factor of real time; ``math.inf`` for "as fast as possible".

    Accepts a positive number (``1`` real time, ``5`` five times faster), ``"5"``, ``"5x"``, and
    ``"max"``, ``"inf"``, ``0`` or ``math.inf`` for as fast as the sink takes the frames.
    """
    value: float
    if isinstance(speed, str):
        text = speed.strip().lower()
        if text in ("max", "inf", "infinity"):
            return math.inf
        text = text.removesuffix("x")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"speed: expected a positive factor of real time or 'max', got {speed!r}") from None
    else:
        value = float(speed)
    if value == 0 or value == math.inf:
        return math.inf
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"speed: expected a positive factor of real time or 'max', got {speed!r}")
    return value


class Pacer:
    """Waits until stream time ``t_s`` is due: ``(t_s − t0_s) / speed`` seconds after :meth:`start`.

    Parameters
    ----------
    speed : factor of real time (see :func:`parse_speed`); infinite never waits.
    stop_event : waiting ends early, returning False, once this is set.
    clock : monotonic clock in seconds (replaceable in tests).
    """

    def __init__(
        self,
        speed: float | str = 1.0,
        *,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.speed = parse_speed(speed)
        self.stop_event = stop_event
        self.clock = clock
        self._wall0: float | None = None
        self._t0 = 0.0

    def start(self, t0_s: float = 0.0) -> None:
        """Stream time ``t0_s`` (s) is now."""
        self._wall0 = self.clock()
        self._t0 = float(t0_s)

    def due(self, t_s: float) -> float:
        """Wall-clock time (of :attr:`clock`) at which stream time ``t_s`` is due."""
        if self._wall0 is None:
            self.start()
        assert self._wall0 is not None
        if math.isinf(self.speed):
            return self._wall0
        return self._wall0 + (float(t_s) - self._t0) / self.speed

    def lag_s(self, t_s: float) -> float:
        """How late stream time ``t_s`` is now, wall seconds (negative: early); 0 at infinite speed."""
        if math.isinf(self.speed):
            return 0.0
        return self.clock() - self.due(t_s)

    def wait_until(self, t_s: float) -> bool:
        """Block until ``t_s`` is due; False if the stop event was set first (or already)."""
        target, stop = self.due(t_s), self.stop_event
        while stop is None or not stop.is_set():
            remaining = target - self.clock()
            if remaining <= 0:
                return True
            if stop is None:
                time.sleep(remaining)
            elif stop.wait(remaining):
                return False
        return False
