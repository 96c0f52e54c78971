"""Who may speak for a series: sender identity on a receiving socket, and the series' owner.

A well-formed message is not a trusted one. Every receiver knows, for each message that came over
the network, which connection it came on (the socket descriptor, ``SRCFD``), the sender's token
(the ``X-Tiltstream-Sender`` property every tiltstream sender puts in its ZeroMQ handshake
metadata, a random id per socket) and, with CURVE on, the sender's authenticated public key
(``User-Id``). The first sender of a series becomes its *owner*; only the owner may add to it, end
it or start the next series, for as long as a connection of the owner is up. An owner that
reconnects (ZeroMQ reconnects by itself after a network blip, with the same token and key, often on
the same descriptor) stays the owner once its new connection's first message has come. When the
owner has gone (its connection closed and not back: the microscope PC restarted its publisher),
whoever comes next takes over: a restarted publisher continues the series or starts a new one
exactly as before.

Messages from the same process (``inproc://``) carry no connection and are always trusted.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import zmq
from zmq.utils.monitor import parse_monitor_message

__all__ = ["Peer", "SENDER_PROPERTY", "new_sender_metadata", "PeerTable", "SeriesAuthority"]

logger = logging.getLogger(__name__)

#: Handshake metadata property that names a tiltstream sender (ZeroMQ requires the ``X-`` prefix).
SENDER_PROPERTY = "X-Tiltstream-Sender"
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)
#: Longest single poll of :meth:`PeerTable.wait`, milliseconds (ZeroMQ takes an int).
_MAX_WAIT_MS = 2**31 - 1


def new_sender_metadata() -> bytes:
    """``ZMQ_METADATA`` value for a new sending socket: a random token of its own."""
    return f"{SENDER_PROPERTY}:{uuid.uuid4().hex}".encode()


@dataclass(frozen=True)
class Peer:
    """The sender of one message.

    Attributes
    ----------
    fd : the connection's socket descriptor on this receiver (a reconnect may get another one or the same).
    token : the sender's ``X-Tiltstream-Sender`` token, or None for a sender that sets none.
    key : the sender's CURVE public key (Z85) when CURVE is on, else None.
    """

    fd: int
    token: str | None = None
    key: str | None = None

    @property
    def identity(self) -> tuple[Any, ...]:
        """What stays the same for one sender across reconnects (the connection when it has no token)."""
        return (self.key, self.token) if self.token is not None else (self.key, "fd", self.fd)

    def __str__(self) -> str:
        who = self.token[:8] if self.token else f"connection {self.fd}"
        return who + (f" (key {self.key[:8]})" if self.key else "")


def _ms_until(deadline: float) -> int:
    return max(0, math.ceil((deadline - time.monotonic()) * 1000))


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        return frame.get(name) or None
    except zmq.ZMQError:  # the property is not set on this connection
        return None


class PeerTable:
    """Peers of one receiving socket, learnt from its messages and its monitor socket.

    The monitor tells when a connection opens and when it closes, by descriptor; each message tells
    the descriptor it came on and, read from the message itself, its sender's token and key. A
    descriptor closed and not opened again carries only messages still queued from the closed
    connection; on an open one, the sender of the latest message is taken as the connection's. A
    sender is :meth:`alive` while one of its connections is up: a sender that reconnects (same token
    and key, on any descriptor, the old one included) is alive again once a message of its new
    connection has come.

    The monitor's queue has no bound: ZeroMQ's I/O thread blocks on a full one, and then no socket
    of the context gets anything more, so a peer that only connects and leaves, thousands of times,
    would stall the receiver (and a stalled monitor cannot even be disabled). The queue stays short
    because every call reads it (:meth:`peer`, :meth:`alive`, :meth:`drain`), and :meth:`wait`, the
    receivers' only way to wait, reads it while it waits. The tables are bounded by the descriptor
    numbers: one entry per open connection, one per descriptor closed and not reused.
    """

    _OPENED = zmq.EVENT_ACCEPTED | zmq.EVENT_CONNECTED
    _EVENTS = _OPENED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED
    #: Monitor events read per call at most (the rest wait for the next call: nothing blocks).
    _MAX_EVENTS = 4096

    def __init__(self, socket: zmq.Socket) -> None:
        self._socket = socket
        # a sender's authenticated key (User-Id) exists only where this socket is a CURVE server;
        # elsewhere reading it would raise (an exception per message)
        self._keys = socket.getsockopt(zmq.MECHANISM) == zmq.CURVE and bool(socket.getsockopt(zmq.CURVE_SERVER))
        self._dead: set[int] = set()  # descriptors closed and not opened again
        self._up: dict[int, Peer] = {}  # open descriptor -> the sender of its latest message
        self._live: Counter[tuple[Any, ...]] = Counter()  # identity -> its connections in _up
        self._monitor: zmq.Socket | None = None
        try:
            address = f"inproc://tiltstream-peers-{uuid.uuid4().hex}"
            socket.monitor(address, self._EVENTS)
        except zmq.ZMQError:  # pragma: no cover - libzmq without monitoring
            return
        monitor = socket.context.socket(zmq.PAIR)
        monitor.setsockopt(zmq.RCVHWM, 0)  # before connecting: the monitor's queue gets no bound
        monitor.setsockopt(zmq.LINGER, 0)
        monitor.connect(address)
        self._monitor = monitor
        self._poller = zmq.Poller()
        self._poller.register(socket, zmq.POLLIN)
        self._poller.register(monitor, zmq.POLLIN)

    def peer(self, parts: list[Any]) -> Peer | None:
        """The sender of a received message (its parts), or None when not over a network."""
        self.drain()
        frame = next((p for p in parts if isinstance(p, zmq.Frame)), None)
        if frame is None:
            return None
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:  # inproc: the same process
            return None
        peer = Peer(fd, _property(frame, SENDER_PROPERTY), _property(frame, "User-Id") if self._keys else None)
        if fd not in self._dead:  # else still queued from a closed connection: it stays closed
            self._set(fd, peer)
        return peer

    def alive(self, peer: Peer) -> bool:
        """Whether a connection of ``peer``'s sender (its identity) is up, as far as the monitor has told."""
        self.drain()
        return self._live[peer.identity] > 0

    def wait(self, timeout_ms: int) -> bool:
        """Wait up to ``timeout_ms`` milliseconds for a message on the socket; True when one is there.

        Monitor events that come meanwhile are read at once, however long the wait.
        """
        if self._monitor is None:
            return bool(self._socket.poll(timeout_ms, zmq.POLLIN))
        deadline = time.monotonic() + max(0, timeout_ms) / 1000
        while True:
            self.drain()
            ready = dict(self._poller.poll(min(_MAX_WAIT_MS, _ms_until(deadline))))
            if self._socket in ready:
                return True
            if not ready and _ms_until(deadline) == 0:
                return False

    def drain(self) -> None:
        """Read the connection events the monitor has queued (at most a bounded number per call)."""
        monitor = self._monitor
        if monitor is None:
            return
        for _ in range(self._MAX_EVENTS):
            if not monitor.getsockopt(_EVENTS) & _POLLIN:  # plain ints: ~1.5 µs a message, poll(0) ~2-6 µs
                return
            event = parse_monitor_message(monitor.recv_multipart())
            fd = int(event["value"])
            self._set(fd, None)
            if event["event"] & self._OPENED:
                self._dead.discard(fd)
            else:
                self._dead.add(fd)

    def _set(self, fd: int, peer: Peer | None) -> None:
        """Record ``peer`` as the sender on open descriptor ``fd`` (None: none known, or closed)."""
        old = self._up.get(fd)
        if old == peer:
            return
        if old is not None:
            self._live[old.identity] -= 1
            if not self._live[old.identity]:
                del self._live[old.identity]
        if peer is None:
            del self._up[fd]
        else:
            self._up[fd] = peer
            self._live[peer.identity] += 1

    def close(self) -> None:
        """Stop monitoring (before the socket closes)."""
        if self._monitor is not None:
            try:
                self._socket.disable_monitor()
            except zmq.ZMQError:
                pass
            self._monitor.close(linger=0)
            self._monitor = None


class SeriesAuthority:
    """The owner of the series a receiver follows, and who may replace it.

    ``allowed(peer)`` is True for messages from the owner, from the same process (peer None), or
    from anyone while there is no owner or the owner's connection has closed. ``accepted(peer)``
    records the sender of a message the receiver took: it becomes the owner.
    """

    def __init__(self, peers: PeerTable | None) -> None:
        self._peers = peers
        self.owner: Peer | None = None

    def allowed(self, peer: Peer | None) -> bool:
        owner = self.owner
        if peer is None or owner is None or peer.identity == owner.identity:
            return True
        if self._peers is not None and self._peers.alive(owner):
            return False
        logger.info("sender %s has gone; sender %s takes over the series", owner, peer)
        return True

    def accepted(self, peer: Peer | None) -> None:
        if peer is not None and peer != self.owner:
            self.owner = peer
