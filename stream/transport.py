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
:class:`Publisher` (XPUB) → :class:`Subscriber` (SUB): latest wins, drops are per subscriber and
counted; see :mod:`tiltstream.stream.pubsub`, where it lives.

All waits take a timeout in milliseconds and return None (or False) when it expires. The viewer
path and the shared intake's :class:`~tiltstream.stream.intake.ReceiverStats` are importable from
here.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any

import zmq

from tiltstream.stream.budget import part_limit_bytes
from tiltstream.stream.authority import PeerTable, new_sender_metadata
from tiltstream.stream.intake import (
    MAX_TIMEOUT_MS,
    Curve,
    Intake,
    Parts,
    ReceiverStats,
    describe_message,
    recv_parts,
    wait_ms,
)
from tiltstream.stream.messages import DEFAULT_LIMITS, Limits, Message
from tiltstream.stream.protocol import pack
from tiltstream.stream.pubsub import DEFAULT_VIEWER_HWM, Publisher, Subscriber
from tiltstream.stream.sockets import BaseSocket
from tiltstream.stream.tracking import RejectCounter

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

#: Default queue bound of the lossless path, messages per socket (memory ≈ hwm × frame bytes).
DEFAULT_HWM = 32
#: After a receive deadline, at most this many more rejected messages are read before giving up.
_MAX_LATE_REJECTS = 256


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
            options={zmq.SNDHWM: int(sndhwm), zmq.METADATA: new_sender_metadata()},
            linger_ms=linger_ms, own_context=True,
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
        wait = min(MAX_TIMEOUT_MS, max(0, wait))
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
    return describe_message(msg) if hasattr(msg, "type_string") else "a raw message"


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
            if not self.senders[role].send_raw(parts, timeout_ms=wait_ms(deadline), what=what)
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
        largest array ``limits`` allows, in float64, or what ``memory_budget`` allows for a queue
        of ``rcvhwm`` messages, whichever is smaller.
    memory_budget : bytes this receiver may hold queued (default
        :func:`~tiltstream.stream.budget.default_budget_bytes`).
    require_start : reject frames and end/1 of a series whose start/1 was not seen (``no_start``):
        consumers that size a series from its start (recorder, reconstruction) set it.
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
        memory_budget: int | None = None,
        require_start: bool = False,
    ) -> None:
        if max_part_bytes is None:
            max_part_bytes = part_limit_bytes(memory_budget, rcvhwm, limits)
        options = {zmq.RCVHWM: int(rcvhwm), zmq.MAXMSGSIZE: int(max_part_bytes)}
        super().__init__(zmq.PULL, endpoint, bind=bind, context=context, curve=curve, options=options)
        self._peers = PeerTable(self._socket)
        self._intake = Intake(name or f"receiver {self.endpoint}", limits, peers=self._peers,
                              require_start=require_start)

    def expect_series(self, stream_id: str, last_seq: int | None) -> None:
        """Take the frames after ``last_seq`` of ``stream_id`` without its start/1 (a resumed series)."""
        self._intake.expect_series(stream_id, last_seq)

    def close(self, linger_ms: int | None = None) -> None:
        """Close the socket (idempotent)."""
        self._peers.close()
        super().close(linger_ms)

    @property
    def rejects(self) -> RejectCounter:
        """Rejected messages by reason."""
        return self._intake.rejects

    def stats(self) -> ReceiverStats:
        """Counts since creation."""
        return self._intake.stats()

    def recv(self, timeout_ms: int = 1000) -> Message | None:
        """The next valid, in-sequence message, or None after ``timeout_ms`` milliseconds.

        Rejected messages are counted and skipped while the time lasts (and a bounded number
        more after it, so a flood of garbage cannot keep the caller here).
        """
        if self._intake.ready:
            return self._intake.ready.popleft()
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        socket, accept, peers = self._socket, self._intake.accept, self._peers
        late = 0
        while True:
            try:
                parts = recv_parts(socket)
            except zmq.Again:
                if peers.wait(wait_ms(deadline)):  # reads connection events while it waits
                    continue
                return None
            msg = accept(parts)
            if msg is not None:
                return msg
            if wait_ms(deadline) == 0:
                late += 1
                if late > _MAX_LATE_REJECTS:
                    return None
