"""Shared helpers of the frame-source tests: a sink that notes the virtual time of each message."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tiltstream.acquire import MemorySink


class ClockedSink(MemorySink):
    """A MemorySink that also notes the (virtual) time of every message it accepts (``at``)."""

    def __init__(self, clock: Callable[[], float], **kw) -> None:
        super().__init__(**kw)
        self.clock, self.at = clock, []

    def send(self, msg) -> bool:
        self.at.append(self.clock())
        return super().send(msg)


@pytest.fixture
def clocked_sink(virtual_clock) -> ClockedSink:
    return ClockedSink(virtual_clock)
