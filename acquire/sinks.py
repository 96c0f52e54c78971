"""Sinks: where frame sources send their messages.

A *sink* is any object with ``send(msg) -> bool`` (:class:`Sink`): the transport's lossless
:class:`~tiltstream.stream.transport.FrameSender` / :class:`~tiltstream.stream.transport.FanOutSender`,
its viewer :class:`~tiltstream.stream.transport.Publisher`, the in-memory
:class:`~tiltstream.acquire.memory.MemorySink` of the tests, or anything else.

``send`` returning False means "not taken now". What that means depends on the sink:

* a **lossless** sink (the default) refused because its queue is full — backpressure. The message
  is offered again until it is taken (:class:`Delivery`), so no frame is ever dropped silently;
* a **lossy** sink (viewer PUB sockets; mark others with :func:`lossy`) dropped it: counted, never
  retried, so a stalled viewer cannot slow acquisition.

:func:`open_push` and :func:`open_pub` make transport sockets from endpoint strings; the transport
(pyzmq) is imported only then.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from tiltstream.stream.messages import Message

__all__ = [
    "Sink",
    "LossySink",
    "lossy",
    "is_lossy",
    "Delivery",
    "DeliveryTimeout",
    "split_endpoints",
    "open_push",
    "open_pub",
    "close_sink",
]

logger = logging.getLogger(__name__)

_TRANSPORT = "tiltstream.stream.transport"
_DEFAULT: Any = object()


@runtime_checkable
class Sink(Protocol):
    """Anything that takes protocol messages: ``send(msg)`` returns True once it has it."""

    def send(self, msg: Message) -> bool:  # pragma: no cover - protocol
        ...


class LossySink:
    """Wraps ``sink``, a sink whose refusals are drops (a viewer PUB socket): :class:`Delivery` offers
    it each message once and counts the refusals, never retries."""

    lossy = True

    def __init__(self, sink: Sink) -> None:
        if not callable(getattr(sink, "send", None)):
            raise TypeError(f"sink: expected an object with send(msg) -> bool, got {type(sink).__name__}")
        self.sink = sink

    def send(self, msg: Message) -> bool:
        """Offer ``msg`` once; False if the sink refused it."""
        return bool(self.sink.send(msg))

    def close(self) -> None:
        """Close the wrapped sink if it can be closed."""
        close_sink(self.sink)

    def __repr__(self) -> str:
        return f"LossySink({self.sink!r})"


def lossy(sink: Sink) -> LossySink:
    """Mark ``sink`` as lossy (see the module docstring)."""
    return sink if isinstance(sink, LossySink) else LossySink(sink)


def is_lossy(sink: Any) -> bool:
    """True for sinks marked lossy and for the transport's viewer ``Publisher``."""
    if getattr(sink, "lossy", False):
        return True
    import sys

    transport = sys.modules.get(_TRANSPORT)
    publisher = getattr(transport, "Publisher", None)
    return publisher is not None and isinstance(sink, publisher)


def close_sink(sink: Any) -> None:
    """Call ``sink.close()`` if it has one."""
    close = getattr(sink, "close", None)
    if callable(close):
        close()


class DeliveryTimeout(TimeoutError):
    """A lossless sink did not take a message within the delivery timeout."""


class Delivery:
    """Sends each message to every sink: lossless ones until they take it, lossy ones once.

    Parameters
    ----------
    sinks : the sinks, in the order they are served.
    timeout_s : longest wait, seconds, for the lossless sinks to take one message; None waits as
        long as it takes (backpressure: the producer is paced by the slowest lossless consumer).
    stop_event : while waiting, give up (``send`` returns False) once this is set.
    retry_pause_s : pause between offers to a sink that returns False at once, seconds (sinks
        that wait by themselves, like ``FrameSender``, are offered again without pause).
    warn_every_s : how often a long wait is logged, seconds.

    Attributes
    ----------
    sent : messages every lossless sink took.
    dropped : per sink index, messages a lossy sink refused.
    waits : times a lossless sink refused at first (backpressure events).
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        *,
        timeout_s: float | None = None,
        stop_event: threading.Event | None = None,
        retry_pause_s: float = 0.005,
        warn_every_s: float = 10.0,
    ) -> None:
        if not sinks:
            raise ValueError("sinks: expected at least one sink, got none")
        for sink in sinks:
            if not callable(getattr(sink, "send", None)):
                raise TypeError(f"sink: expected an object with send(msg) -> bool, got {type(sink).__name__}")
        if timeout_s is not None and not timeout_s >= 0:
            raise ValueError(f"timeout_s: expected seconds >= 0 or None, got {timeout_s}")
        self.sinks = list(sinks)
        self.lossy = [is_lossy(s) for s in self.sinks]
        self.timeout_s = timeout_s
        self.stop_event = stop_event
        self.retry_pause_s = float(retry_pause_s)
        self.warn_every_s = float(warn_every_s)
        self.sent = 0
        self.waits = 0
        self.dropped = [0] * len(self.sinks)

    def send(self, msg: Message, *, timeout_s: float | None = _DEFAULT) -> bool:
        """Deliver ``msg``; True once every lossless sink took it.

        Returns False if :attr:`stop_event` was set before every lossless sink took it.
        Raises :class:`DeliveryTimeout` when ``timeout_s`` (default: the one given at
        construction) ran out first; protocol errors raised by a sink propagate unchanged.
        """
        limit = self.timeout_s if timeout_s is _DEFAULT else timeout_s
        deadline = math.inf if limit is None else time.monotonic() + float(limit)
        for index, sink in enumerate(self.sinks):
            if self.lossy[index]:
                if not sink.send(msg):
                    self.dropped[index] += 1
                continue
            if not self._until_taken(sink, msg, deadline, limit):
                return False
        self.sent += 1
        return True

    def _until_taken(self, sink: Sink, msg: Message, deadline: float, limit: Any) -> bool:
        if sink.send(msg):
            return True
        self.waits += 1
        began = last_warning = time.monotonic()
        while True:
            if self.stop_event is not None and self.stop_event.is_set():
                logger.warning("stopped while waiting for %r to take %s", sink, _describe(msg))
                return False
            now = time.monotonic()
            if now >= deadline:
                raise DeliveryTimeout(
                    f"{_describe(msg)}: expected {sink!r} to take it within {limit} s, "
                    f"still refused after {now - began:.1f} s (consumer stalled or not connected?)"
                )
            if now - last_warning >= self.warn_every_s:
                last_warning = now
                logger.warning("waiting %.0f s for %r to take %s", now - began, sink, _describe(msg))
            tick = time.monotonic()
            if sink.send(msg):
                return True
            if time.monotonic() - tick < self.retry_pause_s:
                pause = min(self.retry_pause_s, max(0.0, deadline - time.monotonic()))
                if self.stop_event is not None:
                    self.stop_event.wait(pause)
                else:
                    time.sleep(pause)


def _describe(msg: Any) -> str:
    seq = getattr(msg, "seq", None)
    name = getattr(msg, "type_string", type(msg).__name__)
    return f"{name} of series {getattr(msg, 'stream_id', '?')!r}" + ("" if seq is None else f" seq {seq}")


def split_endpoints(endpoints: str | Sequence[str]) -> list[str]:
    """``"tcp://a:1,tcp://b:2"`` or a list of such strings -> a flat list of endpoints."""
    items = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    out = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if not out:
        raise ValueError(f"endpoints: expected one or more 'tcp://HOST:PORT', got {endpoints!r}")
    return out


def _transport() -> Any:
    import importlib

    try:
        return importlib.import_module(_TRANSPORT)
    except ImportError as exc:
        raise ImportError(
            f"sending to an endpoint needs {_TRANSPORT} (FrameSender, Publisher) and pyzmq, "
            f"which could not be imported ({exc}); pass a sink object instead, or `pip install pyzmq`"
        ) from exc


def open_push(endpoints: str | Sequence[str], **options: Any) -> Sink:
    """Lossless PUSH socket(s) bound to ``endpoints`` (comma-separated or a list).

    One endpoint gives a ``FrameSender``; several give a ``FanOutSender`` with one PUSH socket per
    endpoint (roles ``push0``, ``push1``, ...), so every consumer gets every message. ``options``
    go to the transport class (``bind``, ``sndhwm``, ``timeout_ms``, ``curve``, ...).
    """
    transport = _transport()
    eps = split_endpoints(endpoints)
    if len(eps) == 1:
        return transport.FrameSender(eps[0], **options)
    return transport.FanOutSender({f"push{i}": ep for i, ep in enumerate(eps)}, **options)


def open_pub(endpoint: str, **options: Any) -> LossySink:
    """The viewer PUB socket bound to ``endpoint``, marked lossy."""
    eps = split_endpoints(endpoint)
    if len(eps) != 1:
        raise ValueError(f"pub endpoint: expected one endpoint, got {len(eps)} ({endpoint!r})")
    return LossySink(_transport().Publisher(eps[0], **options))
