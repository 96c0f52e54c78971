"""Viewer path (PUB/SUB): latest wins, drops are per subscriber and counted.

:class:`Publisher` (XPUB) never blocks: each subscriber has its own small queue, and a message
that does not fit a stalled subscriber's queue is dropped *for that subscriber only*; the others
keep receiving. Each viewer sees its drops as ``seq`` gaps (:meth:`Subscriber.stats`, ``missing``)
and shows them. The publisher learns of new subscribers (:attr:`Publisher.new_subscribers`), so a
service can re-send its latest state to a late joiner at once. :class:`Subscriber` keeps its queue
small and :meth:`Subscriber.recv_latest` drains it to the newest message, counting what it skipped;
:meth:`Subscriber.recv_all` returns every queued message (a burst of volumes).

All waits take a timeout in milliseconds and return None when it expires. Import from
:mod:`tiltstream.stream.transport`, which holds both paths.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
import zmq

from tiltstream.stream.authority import PeerTable, new_sender_metadata
from tiltstream.stream.budget import part_limit_bytes
from tiltstream.stream.intake import Curve, Intake, Parts, ReceiverStats, recv_parts, wait_ms
from tiltstream.stream.messages import DEFAULT_LIMITS, Limits, Message
from tiltstream.stream.protocol import pack
from tiltstream.stream.sockets import BaseSocket
from tiltstream.stream.tracking import RejectCounter

__all__ = ["DEFAULT_VIEWER_HWM", "Publisher", "Subscriber"]

#: Default queue bound of the viewer path, messages per socket.
DEFAULT_VIEWER_HWM = 2


class Publisher(BaseSocket):
    """PUB end of the viewer path: never blocks; a stalled subscriber loses messages, nobody else does.

    Parameters
    ----------
    endpoint : where to bind (default) or connect.
    sndhwm : per-subscriber queue bound, messages (small: viewers want the latest).
    context, curve, limits, zero_copy : as for :class:`FrameSender`.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = True,
        sndhwm: int = DEFAULT_VIEWER_HWM,
        context: zmq.Context | None = None,
        curve: Curve = None,
        limits: Limits = DEFAULT_LIMITS,
        zero_copy: bool = False,
    ) -> None:
        # No MAXMSGSIZE for the (un)subscriptions that come in: with it, libzmq 4.3.5 crashes at
        # exit once it has dropped an oversized one (a SUB subscribing to a 4 MiB topic). Keep the
        # viewer port on 127.0.0.1 or behind CURVE, which admits only known keys.
        options = {zmq.SNDHWM: int(sndhwm), zmq.XPUB_VERBOSE: 1, zmq.METADATA: new_sender_metadata()}
        super().__init__(zmq.XPUB, endpoint, bind=bind, context=context, curve=curve, options=options)
        self.limits = limits
        self.zero_copy = bool(zero_copy)
        self.sent = 0
        self.new_subscribers = 0

    def poll_subscriptions(self) -> int:
        """Read pending (un)subscription notices; returns how many new subscriptions arrived."""
        n = 0
        while self._socket.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            note = self._socket.recv(zmq.NOBLOCK)
            n += bool(note[:1] == b"\x01")
        self.new_subscribers += n
        return n

    def send(self, msg: Message) -> bool:
        """Publish ``msg`` now (never blocks). Always True: drops happen per subscriber."""
        return self.send_raw(pack(msg, limits=self.limits))

    def send_raw(self, parts: Parts) -> bool:
        """Publish multipart ``parts`` as they are; see :meth:`send`."""
        self.poll_subscriptions()
        self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=not self.zero_copy)
        self.sent += 1
        return True


#: A viewer loses messages by design (latest wins): only a jump this long waits for confirmation.
VIEWER_MAX_SEQ_JUMP = 2**20
#: A viewer's gaps are expected drops, counted in its status line: one log line per this many seconds.
VIEWER_GAP_LOG_PERIOD_S = 30.0


class Subscriber(BaseSocket):
    """SUB end of the viewer path: a small queue drained to the newest message.

    Parameters
    ----------
    endpoint : where to connect (default) or bind.
    rcvhwm : queue bound, messages.
    context, curve, limits, name : as for :class:`FrameReceiver`.
    max_drain : most messages read by one :meth:`recv_latest` call.
    memory_budget : bytes this viewer may hold queued; a larger part disconnects its sender
        (default :func:`~tiltstream.stream.budget.default_budget_bytes`).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = False,
        rcvhwm: int = DEFAULT_VIEWER_HWM,
        context: zmq.Context | None = None,
        curve: Curve = None,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
        max_drain: int = 256,
        memory_budget: int | None = None,
    ) -> None:
        max_part = part_limit_bytes(memory_budget, rcvhwm, limits)
        options = {zmq.RCVHWM: int(rcvhwm), zmq.SUBSCRIBE: b"", zmq.MAXMSGSIZE: max_part}
        super().__init__(zmq.SUB, endpoint, bind=bind, context=context, curve=curve, options=options)
        self._peers = PeerTable(self._socket)
        # a viewer's gaps are drops it expects and counts (stats, status line): logged at INFO
        self._intake = Intake(name or f"subscriber {self.endpoint}", limits, logging.INFO, peers=self._peers,
                              max_seq_jump=max(limits.max_seq_jump, VIEWER_MAX_SEQ_JUMP),
                              gap_log_period_s=VIEWER_GAP_LOG_PERIOD_S)
        self.max_drain = int(max_drain)
        self.skipped = 0

    @property
    def rejects(self) -> RejectCounter:
        """Rejected messages by reason."""
        return self._intake.rejects

    def stats(self) -> ReceiverStats:
        """Counts since creation; ``missing`` counts what was lost upstream (publisher drops)."""
        return self._intake.stats(skipped=self.skipped)

    def recv_latest(self, timeout_ms: int = 100) -> Message | None:
        """Wait up to ``timeout_ms`` for a message, then drain the queue; return the newest."""
        by_type, newest, n = self._drain(timeout_ms)
        self.skipped += max(0, n - 1)
        return newest

    def recv_latest_by_type(self, timeout_ms: int = 100) -> dict[str, Message]:
        """Like :meth:`recv_latest`, but the newest message of each type (``"slices"``, ...)."""
        by_type, newest, n = self._drain(timeout_ms)
        self.skipped += n - len(by_type)
        return by_type

    def recv_all(self, timeout_ms: int = 100, max_messages: int = 256) -> list[Message]:
        """Wait up to ``timeout_ms`` for a message, then return every queued one, oldest first.

        Nothing is skipped (unlike :meth:`recv_latest`): for viewers that need each message of a
        burst, e.g. every volume of a 4-D estimate. Messages are validated and sequence-checked
        like the others; at most ``max_messages`` are read per call (the rest stay queued), so a
        flood cannot keep the caller here.
        """
        if max_messages < 1:
            raise ValueError(f"max_messages: expected at least 1, got {max_messages}")
        return list(self._received(timeout_ms, max_messages))

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket (idempotent)."""
        self._peers.close()
        super().close(linger_ms)

    def _received(self, timeout_ms: int, max_reads: int) -> Iterator[Message]:
        """Wait up to ``timeout_ms`` for the first accepted message, then yield it and every one
        already queued behind it; at most ``max_reads`` messages (rejected ones included) are read."""
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        got = False
        reads = 0
        ready = self._intake.ready
        while ready:
            got = True
            yield ready.popleft()
        while reads < max_reads:
            wait = 0 if got else wait_ms(deadline)
            if not self._peers.wait(wait):  # reads connection events while it waits
                if got or wait == 0:
                    break
                continue
            try:
                parts = recv_parts(self._socket)
            except zmq.Again:
                continue
            reads += 1
            msg = self._intake.accept(parts)
            if msg is not None:
                got = True
                yield msg
                while ready:
                    yield ready.popleft()

    def _drain(self, timeout_ms: int) -> tuple[dict[str, Message], Message | None, int]:
        by_type: dict[str, Message] = {}
        newest: Message | None = None
        n = 0
        for msg in self._received(timeout_ms, self.max_drain):
            by_type[msg.NAME] = newest = msg
            n += 1
        return by_type, newest, n

