"""Who may speak for a series: sender identity on a receiving socket, and the series' owner.

A well-formed message is not a trusted one. Every receiver knows, for each message that came over
the network, which connection it came on (the socket descriptor, ``SRCFD``), the sender's token
(the ``X-Tiltstream-Sender`` property every tiltstream sender puts in its ZeroMQ handshake
metadata, a random id per socket) and, with CURVE on, the sender's authenticated public key
(``User-Id``). The first sender of a series becomes its *owner*; only the owner may add to it, end
it or start the next series, for as long as the owner's connection is up. When the owner has gone
(its connection closed: the microscope PC restarted its publisher), whoever comes next takes over:
a restarted publisher continues the series or starts a new one exactly as before.

Messages from the same process (``inproc://``) carry no connection and are always trusted.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

import zmq

__all__ = ["Peer", "SENDER_PROPERTY", "new_sender_metadata", "PeerTable", "SeriesAuthority"]

logger = logging.getLogger(__name__)

#: Handshake metadata property that names a tiltstream sender (ZeroMQ requires the ``X-`` prefix).
SENDER_PROPERTY = "X-Tiltstream-Sender"


def new_sender_metadata() -> bytes:
    """``ZMQ_METADATA`` value for a new sending socket: a random token of its own."""
    return f"{SENDER_PROPERTY}:{uuid.uuid4().hex}".encode()


@dataclass(frozen=True)
class Peer:
    """The sender of one message.

    Attributes
    ----------
    fd : the connection's socket descriptor on this receiver (changes when the sender reconnects).
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


def _property(frame: zmq.Frame, name: str) -> str | None:
    try:
        return frame.get(name) or None
    except zmq.ZMQError:  # the property is not set on this connection
        return None


class PeerTable:
    """Peers of one receiving socket, learnt from its messages and its monitor socket.

    :meth:`peer` costs one property read per message (the descriptor); the token and key are read
    once per connection. :meth:`alive` drains the socket monitor's connect/disconnect events first.
    """

    _EVENTS = zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED

    def __init__(self, socket: zmq.Socket) -> None:
        self._by_fd: dict[int, Peer] = {}
        self._dead: set[int] = set()
        try:
            self._monitor: zmq.Socket | None = socket.get_monitor_socket(self._EVENTS)
        except zmq.ZMQError:  # pragma: no cover - libzmq without monitoring
            self._monitor = None
        self._socket = socket

    def peer(self, parts: list[Any]) -> Peer | None:
        """The sender of a received message (its parts), or None when not over a network."""
        frame = next((p for p in parts if isinstance(p, zmq.Frame)), None)
        if frame is None:
            return None
        try:
            fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:  # inproc: the same process
            return None
        peer = self._by_fd.get(fd)
        if peer is None or fd in self._dead:
            new = Peer(fd, _property(frame, SENDER_PROPERTY), _property(frame, "User-Id"))
            if peer is not None and new == peer:
                return peer  # still queued from the closed connection: it stays closed
            self._dead.discard(fd)  # a new connection on a reused descriptor
            peer = self._by_fd[fd] = new
        return peer

    def alive(self, peer: Peer) -> bool:
        """Whether ``peer``'s connection is still up, as far as the monitor has told."""
        self._drain()
        return peer.fd not in self._dead

    def _drain(self) -> None:
        monitor = self._monitor
        if monitor is None:
            return
        from zmq.utils.monitor import recv_monitor_message  # noqa: PLC0415

        while monitor.poll(0):
            self._dead.add(int(recv_monitor_message(monitor)["value"]))  # the descriptor that closed

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
