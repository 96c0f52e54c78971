"""Shared helpers of the frame-source tests: a virtual clock for pacing without wall-clock bounds."""

from __future__ import annotations

import pytest

from tiltstream.acquire import MemorySink


class VirtualClock:
    """A monotonic clock that moves only while a pacer waits.

    Pass it as the source's ``clock`` *and* its ``stop_event``: a :class:`~tiltstream.acquire.pacing.Pacer`
    waits with ``stop_event.wait(remaining)``, which here advances the clock by ``remaining`` at once.
    """

    def __init__(self, start_s: float = 100.0) -> None:
        self.now = start_s

    def __call__(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        self.now += timeout
        return False


class ClockedSink(MemorySink):
    """A MemorySink that also notes the virtual time of every message it accepts (``at``)."""

    def __init__(self, clock: VirtualClock, **kw) -> None:
        super().__init__(**kw)
        self.clock, self.at = clock, []

    def send(self, msg) -> bool:
        self.at.append(self.clock())
        return super().send(msg)


@pytest.fixture
def virtual_clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def clocked_sink(virtual_clock) -> ClockedSink:
    return ClockedSink(virtual_clock)
