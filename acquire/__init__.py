"""Frame sources: tilt schedulers, the simulated microscope, replay and acquisition adapters.

Every source publishes one series at a time (``start/1``, ``frame/1`` …, ``end/1``) through a
:class:`FramePublisher` into one or more *sinks* (``send(msg) -> bool``): the transport's lossless
sender, a viewer PUB socket, or a :class:`MemorySink` in tests.

=========================  ===========================================================
:class:`FramePublisher`    publisher API for a microscope's own scripts
:class:`TiltScheduler`     golden-ratio (or other) angles and planned times, N or endless
:class:`SimulatedMicroscope`  a dynamic phantom published in scaled real time
:func:`replay`             a recorded file streamed at real speed, ×N or as fast as taken
:class:`FolderWatcher`     frame files written by acquisition software, as a stream
:class:`MemorySink`        in-memory sink (optionally bounded: backpressure) for tests
=========================  ===========================================================

Modules that need torch (scheduler, simulator) are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from tiltstream.acquire.memory import MemorySink
from tiltstream.acquire.pacing import Pacer, parse_speed
from tiltstream.acquire.publisher import FramePublisher
from tiltstream.acquire.sinks import Delivery, DeliveryTimeout, LossySink, Sink, lossy, open_pub, open_push

_LAZY = {
    "TiltScheduler": "scheduler",
    "PlannedFrame": "scheduler",
    "Schedule": "scheduler",
    "golden_schedule": "scheduler",
    "SimulatedMicroscope": "simulated",
    "TemperatureRamp": "simulated",
    "RunStats": "simulated",
    "replay": "replay",
    "replay_series": "replay",
    "ReplayStats": "replay",
    "FolderWatcher": "folder",
    "angle_from_name": "folder",
}

__all__ = [
    "FramePublisher",
    "MemorySink",
    "Sink",
    "LossySink",
    "lossy",
    "Delivery",
    "DeliveryTimeout",
    "open_push",
    "open_pub",
    "Pacer",
    "parse_speed",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"tiltstream.acquire.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
