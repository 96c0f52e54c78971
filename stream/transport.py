"""Frame transport over ZeroMQ: a lossless path for recorder and reconstructor, a lossy one for viewers.

Lossless path (PUSH/PULL)
-------------------------
:class:`FrameSender` (PUSH) → :class:`FrameReceiver` (PULL). High-water marks bound both queues
(``sndhwm`` messages at the sender, ``rcvhwm`` at the receiver, plus what the OS buffers); when they
are full :meth:`FrameSender.send` waits up to its timeout and then returns False, logs and counts
it: backpressure the producer sees, never a silent drop.

**Fan-out.** A PUSH socket *shares* messages among its connected peers (round robin), so each
lossless consumer needs a PUSH socket of its own. :class:`FanOutSender` binds one PUSH per consumer
*role* (``{"record": ..., "recon": ...}``), each consumer connects a :class:`FrameReceiver` to its
role's endpoint and gets every message. The slowest consumer paces the producer. A send that timed
out for some roles is completed by calling ``send`` again with the same message: only the roles
that missed it get it. Two receivers connected to one role's endpoint split the stream (share work).

**What is guaranteed.** A message ``send`` accepted reaches the consumer unless the consumer or the
link dies while it is queued; the consumer then sees the loss as a gap in ``seq`` (counted and
logged), never as silent corruption. The recorder acknowledges a frame only after it is in the
file, so nothing it acknowledged is lost; this is why no ack/credit round trip is needed. With
``context=None`` a sender over tcp/ipc owns a private context, so :meth:`FrameSender.close` waits
(up to ``linger_ms``) until the queued messages are handed to the network.

Every received message is validated (:func:`~tiltstream.stream.protocol.try_unpack`), counted by
reject reason (:class:`~tiltstream.stream.tracking.RejectCounter`) and sequence-checked
(:class:`~tiltstream.stream.tracking.SeqTracker`: gaps logged, duplicates and stale series
rejected, new series detected). Garbage never stops a receiver.

Viewer path (PUB/SUB)
---------------------
:class:`Publisher` (XPUB) never blocks: each subscriber has its own small queue, and a message
that does not fit a stalled subscriber's queue is dropped *for that subscriber only*; the others
keep receiving. Each viewer sees its drops as ``seq`` gaps (:meth:`Subscriber.stats`, ``missing``)
and shows them. The publisher learns of new subscribers (:attr:`Publisher.new_subscribers`), so a
service can re-send its latest state to a late joiner at once. :class:`Subscriber` keeps its queue
small and :meth:`Subscriber.recv_latest` drains it to the newest message, counting what it skipped.

All waits take a timeout in milliseconds and return None (or False) when it expires.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from tiltstream.stream.messages import DEFAULT_LIMITS, FrameMsg, Limits, Message
from tiltstream.stream.protocol import pack, try_unpack
from tiltstream.stream.sockets import BaseSocket, CurveClientConfig, CurveConfig
from tiltstream.stream.tracking import (
    RejectCounter,
    SeqResult,
    SeqStatus,
    SeqTracker,
    sequence_key,
)

__all__ = [
    "DEFAULT_HWM",
    "DEFAULT_VIEWER_HWM",
    "ReceiverStats",
    "FrameSender",
    "FanOutSender",
    "FrameReceiver",
    "Publisher",
    "Subscriber",
]

logger = logging.getLogger(__name__)

Curve = CurveConfig | CurveClientConfig | None
Parts = Sequence[Any]

#: Default queue bound of the lossless path, messages per socket (memory ≈ hwm × frame bytes).
DEFAULT_HWM = 32
#: Default queue bound of the viewer path, messages per socket.
DEFAULT_VIEWER_HWM = 2
#: After a receive deadline, at most this many more rejected messages are read before giving up.
_MAX_LATE_REJECTS = 256
#: Longest wait handed to ZeroMQ (its timeouts are C ints), ms.
_MAX_TIMEOUT_MS = 2**31 - 1


def _wait_ms(deadline: float) -> int:
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class ReceiverStats:
    """Counts of a receiving socket since it was created.

    Attributes
    ----------
    received : messages accepted (returned, or skipped by a subscriber as superseded).
    rejected : messages dropped as invalid or out of sequence (total of ``rejects_by_reason``).
    rejects_by_reason : reason -> count (codec reasons and ``duplicate``/``out_of_order``/``stale``).
    gaps : times a jump in ``seq`` (or joining a series mid-way) was seen.
    missing : messages known lost: seqs that never arrived.
    series : new series (stream_ids) seen.
    skipped : accepted messages a subscriber discarded for a newer one (0 on the lossless path).
    """

    received: int
    rejected: int
    rejects_by_reason: dict[str, int]
    gaps: int
    missing: int
    series: int
    skipped: int = 0


class _Intake:
    """Validation and sequence bookkeeping shared by FrameReceiver and Subscriber."""

    def __init__(self, name: str, limits: Limits, gap_log_level: int = logging.WARNING) -> None:
        self.name = name
        self.limits = limits
        self.gap_log_level = gap_log_level
        self.rejects = RejectCounter(name=name)
        self.trackers: dict[str, SeqTracker] = {}
        self.received = 0
        self.gaps = 0
        self.series = 0
        self.last_result: SeqResult | None = None

    def accept(self, parts: Parts) -> Message | None:
        if type(parts) is not list:
            parts = list(parts)
        msg = try_unpack(parts, self.rejects, limits=self.limits)
        if msg is None:
            return None
        key = "series" if type(msg) is FrameMsg else sequence_key(msg.NAME)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = SeqTracker(gap_log_level=self.gap_log_level)
        result = tracker.observe(msg)
        if result.status is not SeqStatus.OK and not self._noted(msg, result):
            return None
        self.received += 1
        self.last_result = result
        return msg

    def _noted(self, msg: Message, result: SeqResult) -> bool:
        """Count and log an unusual sequence outcome; False if the message is to be dropped."""
        if not result.accepted:
            at = "" if result.seq is None else f" seq {result.seq}"
            self.rejects.count(
                result.status.value, f"{msg.type_string} of series {msg.stream_id!r}{at}"
            )
            return False
        if result.status is SeqStatus.NEW_SERIES:
            self.series += 1
            logger.info(
                "%s: new series %r (first message %s)", self.name, msg.stream_id, msg.type_string
            )
        elif result.status is SeqStatus.INCONSISTENT:
            logger.warning(
                "%s: end/1 of series %r announces %d frames, fewer than arrived",
                self.name, msg.stream_id, getattr(msg, "n_frames", -1),
            )
        if result.missing:
            self.gaps += 1
        return True

    def stats(self, skipped: int = 0) -> ReceiverStats:
        snap = self.rejects.snapshot()
        return ReceiverStats(
            received=self.received,
            rejected=snap["total"],
            rejects_by_reason=snap["by_reason"],
            gaps=self.gaps,
            missing=sum(t.n_missing for t in self.trackers.values()),
            series=self.series,
            skipped=skipped,
        )


# ---------------------------------------------------------------------------------------------
# Lossless path.


class FrameSender(BaseSocket):
    """PUSH end of the lossless path: bounded queue, blocking sends with a timeout.

    Parameters
    ----------
    endpoint : where to bind (default) or connect, e.g. ``"tcp://127.0.0.1:0"``.
    bind : bind (the publisher usually binds, one endpoint per consumer role) or connect.
    sndhwm : queue bound, messages.
    timeout_ms : default wait of :meth:`send` when the queue is full, milliseconds.
    linger_ms : how long :meth:`close` still tries to deliver queued messages, milliseconds.
    context : ZeroMQ context; None: a private one for tcp/ipc (see module docstring), the shared
        instance for inproc.
    curve : CURVE settings or None.
    limits : bounds :func:`~tiltstream.stream.protocol.pack` checks messages against.
    zero_copy : send arrays of ≥ 64 KiB without copying; the caller must then not modify an array
        after sending it (ZeroMQ reads it for as long as the message is queued).
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = True,
        sndhwm: int = DEFAULT_HWM,
        timeout_ms: int = 1000,
        linger_ms: int = 5000,
        context: zmq.Context | None = None,
        curve: Curve = None,
        limits: Limits = DEFAULT_LIMITS,
        zero_copy: bool = False,
    ) -> None:
        super().__init__(
            zmq.PUSH, endpoint, bind=bind, context=context, curve=curve,
            options={zmq.SNDHWM: int(sndhwm)}, linger_ms=linger_ms, own_context=True,
        )
        self.timeout_ms = int(timeout_ms)
        self.limits = limits
        self.zero_copy = bool(zero_copy)
        self.sent = 0
        self.timeouts = 0
        self._last_warning = -math.inf
        self._sndtimeo: int | None = None  # the socket's SNDTIMEO, ms, as last set

    def send(self, msg: Message, *, timeout_ms: int | None = None) -> bool:
        """Send one message; wait up to ``timeout_ms`` (default: the socket's) for queue space.

        Returns True once queued, False on timeout (counted in :attr:`timeouts` and logged).
        Raises :class:`~tiltstream.stream.messages.ProtocolError` for a message that breaks the
        protocol: that is a bug of the caller, never sent.
        """
        return self.send_raw(pack(msg, limits=self.limits), timeout_ms=timeout_ms, what=msg)

    def send_raw(self, parts: Parts, *, timeout_ms: int | None = None, what: Any = None) -> bool:
        """Send already-packed (or deliberately broken) multipart ``parts``; see :meth:`send`."""
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        wait = min(_MAX_TIMEOUT_MS, max(0, wait))
        if wait != self._sndtimeo:  # ZeroMQ waits for queue space itself: no poll loop
            self._socket.setsockopt(zmq.SNDTIMEO, wait)
            self._sndtimeo = wait
        try:
            self._socket.send_multipart(parts, copy=not self.zero_copy)
        except zmq.Again:
            pass
        else:
            self.sent += 1
            return True
        self.timeouts += 1
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
            logger.warning(
                "%s: send timed out after %d ms (consumer slow, stalled or not connected); "
                "%d timeouts so far; not sent: %s",
                self.endpoint, wait, self.timeouts, _describe(what),
            )
        return False


def _describe(msg: Any) -> str:
    if not hasattr(msg, "type_string"):
        return "a raw message"
    seq = getattr(msg, "seq", None)
    return f"{msg.type_string} of series {msg.stream_id!r}" + ("" if seq is None else f" seq {seq}")


class FanOutSender:
    """One lossless stream to several consumers: one PUSH socket per consumer role.

    Parameters
    ----------
    endpoints : role -> endpoint, e.g. ``{"record": "tcp://127.0.0.1:5555", "recon":
        "tcp://127.0.0.1:5556"}`` (port 0 for free ports; see :attr:`endpoints`).
    bind, sndhwm, timeout_ms, linger_ms, curve, limits, zero_copy : as for :class:`FrameSender`,
        applied to every role.
    context : ZeroMQ context; None: one private context for all roles (shared instance if an
        endpoint is inproc).
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        bind: bool = True,
        sndhwm: int = DEFAULT_HWM,
        timeout_ms: int = 1000,
        linger_ms: int = 5000,
        context: zmq.Context | None = None,
        curve: Curve = None,
        limits: Limits = DEFAULT_LIMITS,
        zero_copy: bool = False,
    ) -> None:
        if not endpoints:
            raise ValueError("endpoints: expected at least one role -> endpoint, got none")
        inproc = any(str(ep).startswith("inproc://") for ep in endpoints.values())
        self._own_context = context is None and not inproc
        if context is None:
            context = zmq.Context() if self._own_context else zmq.Context.instance()
        self.context = context
        self.timeout_ms = int(timeout_ms)
        self.limits = limits
        self.senders: dict[str, FrameSender] = {}
        try:
            for role, endpoint in endpoints.items():
                self.senders[str(role)] = FrameSender(
                    endpoint, bind=bind, sndhwm=sndhwm, timeout_ms=timeout_ms, linger_ms=linger_ms,
                    context=context, curve=curve, limits=limits, zero_copy=zero_copy,
                )
        except BaseException:
            self.close(linger_ms=0)
            raise
        self.sent = 0
        self.abandoned: dict[str, int] = {role: 0 for role in self.senders}
        self._pending_msg: Any = None
        self._pending_roles: list[str] = []

    @property
    def endpoints(self) -> dict[str, str]:
        """Role -> the endpoint actually bound or connected (real port for port 0)."""
        return {role: s.endpoint for role, s in self.senders.items()}

    def send(self, msg: Message, *, timeout_ms: int | None = None) -> bool:
        """Send ``msg`` to every role, all within ``timeout_ms`` (default: the sender's).

        Returns True when every role queued it. On False, the roles that timed out are remembered:
        calling ``send`` again with the *same* message object sends it only to them. Sending a
        different message first gives up on them (logged, counted in :attr:`abandoned`; those
        consumers see a gap).
        """
        return self.send_raw(pack(msg, limits=self.limits), timeout_ms=timeout_ms, what=msg)

    def send_raw(self, parts: Parts, *, timeout_ms: int | None = None, what: Any = None) -> bool:
        """Send multipart ``parts`` to every role; ``what`` identifies a retry (see :meth:`send`)."""
        key = parts if what is None else what
        if self._pending_roles and key is self._pending_msg:
            roles = self._pending_roles
        else:
            for role in self._pending_roles:
                self.abandoned[role] += 1
                logger.warning(
                    "role %r never got %s; its consumer will see a gap",
                    role, _describe(self._pending_msg),
                )
            roles = list(self.senders)
        wait = self.timeout_ms if timeout_ms is None else int(timeout_ms)
        deadline = time.monotonic() + max(0, wait) / 1000
        missed = [
            role for role in roles
            if not self.senders[role].send_raw(parts, timeout_ms=_wait_ms(deadline), what=what)
        ]
        self._pending_msg, self._pending_roles = (key, missed) if missed else (None, [])
        if not missed:
            self.sent += 1
        return not missed

    def close(self, linger_ms: int | None = None) -> None:
        """Close every role's socket; with a private context, wait for queued messages (≤ linger)."""
        for sender in self.senders.values():
            sender.close(linger_ms)
        if self._own_context and not self.context.closed:
            self.context.term()

    def __enter__(self) -> FanOutSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameReceiver(BaseSocket):
    """PULL end of the lossless path: validates, sequence-checks and counts every message.

    Parameters
    ----------
    endpoint : where to connect (default) or bind.
    bind : bind instead of connect (then one or more senders connect to it).
    rcvhwm : queue bound, messages.
    context, curve : see :class:`FrameSender` (None: the shared instance).
    limits : what :func:`~tiltstream.stream.protocol.unpack` accepts.
    name : label for log lines; default ``"receiver <endpoint>"``.
    max_part_bytes : peers sending a larger single part are disconnected by ZeroMQ; default the
        largest array ``limits`` allows, in float64.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = False,
        rcvhwm: int = DEFAULT_HWM,
        context: zmq.Context | None = None,
        curve: Curve = None,
        limits: Limits = DEFAULT_LIMITS,
        name: str | None = None,
        max_part_bytes: int | None = None,
    ) -> None:
        if max_part_bytes is None:
            max_part_bytes = 8 * max(limits.max_frame_elements, limits.max_volume_elements)
        options = {zmq.RCVHWM: int(rcvhwm), zmq.MAXMSGSIZE: int(max_part_bytes)}
        super().__init__(zmq.PULL, endpoint, bind=bind, context=context, curve=curve, options=options)
        self._intake = _Intake(name or f"receiver {self.endpoint}", limits)
        self._rcvtimeo: int | None = None  # the socket's RCVTIMEO, ms, as last set

    @property
    def rejects(self) -> RejectCounter:
        """Rejected messages by reason."""
        return self._intake.rejects

    @property
    def last_result(self) -> SeqResult | None:
        """What the sequence check made of the last message returned (new series, gap, ...)."""
        return self._intake.last_result

    def stats(self) -> ReceiverStats:
        """Counts since creation."""
        return self._intake.stats()

    def recv(self, timeout_ms: int = 1000) -> Message | None:
        """The next valid, in-sequence message, or None after ``timeout_ms`` milliseconds.

        Rejected messages are counted and skipped while the time lasts (and a bounded number
        more after it, so a flood of garbage cannot keep the caller here).
        """
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        wait = min(_MAX_TIMEOUT_MS, max(0, math.ceil(timeout_ms)))
        socket, accept = self._socket, self._intake.accept
        late = 0
        while True:
            if wait != self._rcvtimeo:  # ZeroMQ waits for a message itself: no poll loop
                socket.setsockopt(zmq.RCVTIMEO, wait)
                self._rcvtimeo = wait
            try:  # the header as bytes (small), the buffers as zero-copy frames
                parts = [socket.recv()]
            except zmq.Again:
                return None
            while socket.getsockopt(zmq.RCVMORE):
                parts.append(socket.recv(copy=False))
            msg = accept(parts)
            if msg is not None:
                return msg
            wait = _wait_ms(deadline)
            if wait == 0:
                late += 1
                if late > _MAX_LATE_REJECTS:
                    return None


# ---------------------------------------------------------------------------------------------
# Viewer path.


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
        options = {zmq.SNDHWM: int(sndhwm), zmq.XPUB_VERBOSE: 1}
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


class Subscriber(BaseSocket):
    """SUB end of the viewer path: a small queue drained to the newest message.

    Parameters
    ----------
    endpoint : where to connect (default) or bind.
    rcvhwm : queue bound, messages.
    context, curve, limits, name : as for :class:`FrameReceiver`.
    max_drain : most messages read by one :meth:`recv_latest` call.
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
    ) -> None:
        options = {zmq.RCVHWM: int(rcvhwm), zmq.SUBSCRIBE: b""}
        super().__init__(zmq.SUB, endpoint, bind=bind, context=context, curve=curve, options=options)
        # a viewer's gaps are drops it expects and counts (stats, status line): logged at INFO
        self._intake = _Intake(name or f"subscriber {self.endpoint}", limits, logging.INFO)
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

    def _received(self, timeout_ms: int, max_reads: int) -> Iterator[Message]:
        """Wait up to ``timeout_ms`` for the first accepted message, then yield it and every one
        already queued behind it; at most ``max_reads`` messages (rejected ones included) are read."""
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        got = False
        reads = 0
        while reads < max_reads:
            wait = 0 if got else _wait_ms(deadline)
            if not self._socket.poll(wait, zmq.POLLIN):
                if got or wait == 0:
                    break
                continue
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                continue
            reads += 1
            msg = self._intake.accept(parts)
            if msg is not None:
                got = True
                yield msg

    def _drain(self, timeout_ms: int) -> tuple[dict[str, Message], Message | None, int]:
        by_type: dict[str, Message] = {}
        newest: Message | None = None
        n = 0
        for msg in self._received(timeout_ms, self.max_drain):
            by_type[msg.NAME] = newest = msg
            n += 1
        return by_type, newest, n

