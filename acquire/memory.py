"""In-memory sink for tests and in-process pipelines.

:class:`MemorySink` keeps the messages it is sent, in order. By default each message goes through
the wire codec on the way in (``pack`` then ``unpack`` of a private copy), so a test sees exactly
what a network consumer would, and a message that breaks the protocol fails at ``send`` as it
would on a socket. With ``maxsize`` it holds at most that many messages: ``send`` then waits (up
to ``timeout_s``) for a consumer to :meth:`~MemorySink.get` one, and returns False when the time
runs out, like the transport's lossless ``FrameSender`` — backpressure without a network.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from tiltstream.stream.messages import EndMsg, FrameMsg, Message, StartMsg
from tiltstream.stream.protocol import pack, unpack

__all__ = ["MemorySink"]


class MemorySink:
    """Collects messages; optionally bounded to simulate a slow consumer.

    Parameters
    ----------
    maxsize : most messages held (None: unbounded). A full sink makes ``send`` wait.
    timeout_s : how long ``send`` waits for room, seconds, before returning False (None: forever).
    roundtrip : pass each message through ``pack``/``unpack`` (validates it and detaches it from
        the sender's arrays); False stores the object as sent.
    lossy : mark the sink lossy (a refusal is a drop, see :mod:`tiltstream.acquire.sinks`).

    Attributes
    ----------
    sent : messages accepted so far.
    refused : ``send`` calls that returned False.
    """

    def __init__(
        self,
        maxsize: int | None = None,
        *,
        timeout_s: float | None = 1.0,
        roundtrip: bool = True,
        lossy: bool = False,
    ) -> None:
        if maxsize is not None and int(maxsize) < 1:
            raise ValueError(f"maxsize: expected a positive number of messages or None, got {maxsize}")
        self.maxsize = None if maxsize is None else int(maxsize)
        self.timeout_s = timeout_s
        self.roundtrip = bool(roundtrip)
        self.lossy = bool(lossy)
        self.sent = 0
        self.refused = 0
        self.closed = False
        self._queue: deque[Message] = deque()
        self._cond = threading.Condition()

    def send(self, msg: Message) -> bool:
        """Store ``msg``; False if the sink stayed full for ``timeout_s`` (or is closed)."""
        if self.roundtrip:
            msg = unpack([bytes(part) for part in pack(msg)])
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self.closed or self.maxsize is None or len(self._queue) < self.maxsize, timeout=self.timeout_s
            )
            if not ok or self.closed:
                self.refused += 1
                return False
            self._queue.append(msg)
            self.sent += 1
            self._cond.notify_all()
            return True

    def get(self, timeout_s: float | None = 1.0) -> Message | None:
        """Remove and return the oldest message; None if none arrived within ``timeout_s``."""
        with self._cond:
            if not self._cond.wait_for(lambda: bool(self._queue), timeout=timeout_s):
                return None
            msg = self._queue.popleft()
            self._cond.notify_all()
            return msg

    def wait_for(self, n_messages: int, timeout_s: float = 5.0) -> bool:
        """Wait until ``n_messages`` were accepted in total; False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: self.sent >= n_messages, timeout=timeout_s)

    @property
    def messages(self) -> list[Message]:
        """The messages held now, oldest first (a copy of the list)."""
        with self._cond:
            return list(self._queue)

    def of_type(self, cls: type) -> list[Any]:
        """Held messages of one class, e.g. ``sink.of_type(FrameMsg)``."""
        return [m for m in self.messages if isinstance(m, cls)]

    @property
    def frames(self) -> list[FrameMsg]:
        """Held ``frame/1`` messages."""
        return self.of_type(FrameMsg)

    @property
    def starts(self) -> list[StartMsg]:
        """Held ``start/1`` messages."""
        return self.of_type(StartMsg)

    @property
    def ends(self) -> list[EndMsg]:
        """Held ``end/1`` messages."""
        return self.of_type(EndMsg)

    def close(self) -> None:
        """Refuse further messages; wakes a waiting ``send``."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def __len__(self) -> int:
        with self._cond:
            return len(self._queue)

    def __repr__(self) -> str:
        return f"MemorySink(held={len(self)}, sent={self.sent}, maxsize={self.maxsize})"
