"""What every receiving socket does with a message: validate, sequence-check, count.

:class:`Intake` is shared by :class:`~tiltstream.stream.transport.FrameReceiver` (lossless path)
and :class:`~tiltstream.stream.pubsub.Subscriber` (viewer path); :class:`ReceiverStats` is what
they report.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from tiltstream.stream.authority import Peer, PeerTable, SeriesAuthority
from tiltstream.stream.messages import EndMsg, FrameMsg, Limits, Message, StartMsg
from tiltstream.stream.protocol import try_unpack
from tiltstream.stream.schema import _ARRAYS
from tiltstream.stream.sockets import CurveClientConfig, CurveConfig
from tiltstream.stream.tracking import RejectCounter, SeqResult, SeqStatus, SeqTracker, sequence_key

__all__ = ["ReceiverStats", "Intake", "Curve", "Parts", "wait_ms", "MAX_TIMEOUT_MS"]

logger = logging.getLogger(__name__)

Curve = CurveConfig | CurveClientConfig | None
Parts = Sequence[Any]

#: Most parts a message has (a header and the three arrays of slices/1).
MAX_PARTS = 1 + max(len(arrays) for arrays in _ARRAYS.values())


def recv_parts(socket: zmq.Socket) -> list[Any]:
    """One queued multipart message as zero-copy frames (they carry the sender's connection), or
    ``zmq.Again``. At most ``MAX_PARTS + 1`` parts are kept (enough for the codec to say
    ``extra_parts``): the rest of a message of a million tiny parts is read and dropped part by
    part, not gathered in this process."""
    parts = [socket.recv(zmq.NOBLOCK, copy=False)]
    while socket.getsockopt(zmq.RCVMORE):
        part = socket.recv(copy=False)
        if len(parts) <= MAX_PARTS:
            parts.append(part)
    return parts

#: Longest wait handed to ZeroMQ (its timeouts are C ints), ms.
MAX_TIMEOUT_MS = 2**31 - 1


def wait_ms(deadline: float) -> int:
    """Milliseconds from now until ``deadline`` (``time.monotonic()`` seconds), at least 0."""
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


class Intake:
    """Validation, sender authority and sequence bookkeeping shared by FrameReceiver and Subscriber.

    Parameters
    ----------
    name : label for log lines.
    limits : what the codec accepts; ``limits.max_seq_jump`` bounds a plausible jump in ``seq``.
    gap_log_level : logging level of gap lines.
    gap_log_period_s : at most one gap line per this many seconds (0: every gap).
    peers : the socket's peer table (None: every message is trusted as the same sender).
    max_seq_jump : see below; default ``limits.max_seq_jump``.
    require_start : frames (and end/1) of a series whose ``start/1`` was not seen are rejected
        (``no_start``) instead of starting a series: the lossless path, where a series is sized by
        its start. A viewer joins mid-way and takes what comes.

    A message that jumps ahead in its sequence by more than ``max_seq_jump`` is held back: the next
    message of that sequence decides. If it continues from the held one, both are accepted (a real
    gap); if it continues the old sequence, the held one is dropped (``implausible_seq``). So one
    forged ``seq`` cannot make the rest of a series look old. An end/1 is never held (no message
    follows it): after lost frames it ends the series with the gap counted. Accepted messages released late wait
    in :attr:`ready`; callers take those before reading their socket again.
    """

    def __init__(
        self,
        name: str,
        limits: Limits,
        gap_log_level: int = logging.WARNING,
        *,
        peers: PeerTable | None = None,
        require_start: bool = False,
        max_seq_jump: int | None = None,
        gap_log_period_s: float = 0.0,
    ) -> None:
        self.name = name
        self.gap_log_period_s = gap_log_period_s
        self.limits = limits
        self.gap_log_level = gap_log_level
        self.require_start = require_start
        self.max_seq_jump = limits.max_seq_jump if max_seq_jump is None else int(max_seq_jump)
        self.peers = peers
        self.authority = SeriesAuthority(peers)
        self.rejects = RejectCounter(name=name)
        self.trackers: dict[str, SeqTracker] = {}
        self.received = 0
        self.gaps = 0
        self.series = 0
        self.ready: deque[Message] = deque()
        self._held: dict[str, tuple[Message, Peer | None]] = {}

    def expect_series(self, stream_id: str, last_seq: int | None) -> None:
        """Follow ``stream_id`` as if its start/1 and frames up to ``last_seq`` had arrived (resume)."""
        tracker = self._tracker("series")
        tracker.begin(stream_id)
        tracker.last_seq = last_seq

    def _tracker(self, key: str) -> SeqTracker:
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = SeqTracker(gap_log_level=self.gap_log_level,
                                                           gap_log_period_s=self.gap_log_period_s)
        return tracker

    def accept(self, parts: Parts) -> Message | None:
        if type(parts) is not list:
            parts = list(parts)
        msg = try_unpack(parts, self.rejects, limits=self.limits)
        if msg is None:
            return None
        peer = None if self.peers is None else self.peers.peer(parts)
        key = "series" if type(msg) is FrameMsg else sequence_key(msg.NAME)
        if key == "series" and not self.authority.allowed(peer):
            self.rejects.count(
                "foreign_sender",
                f"{describe_message(msg)} from {peer}: the series belongs to sender {self.authority.owner}, "
                "still connected",
            )
            return None
        tracker = self._tracker(key)
        released = None
        if key in self._held:
            held, held_peer = self._held.pop(key)
            if self._continues(held, msg):
                released = held if self._admit(held, key, tracker, held_peer) else None
            else:
                self.rejects.count("implausible_seq", f"{describe_message(held)}: the sequence did not continue from it")
        # end/1 is not held: nothing follows it to confirm it, and only the series' owner may send it
        if self._jump(tracker, msg) > self.max_seq_jump and not isinstance(msg, EndMsg):
            self._held[key] = (msg, peer)
            return released
        if not self._admit(msg, key, tracker, peer):
            return released
        if released is not None:
            self.ready.append(msg)
            return released
        return msg

    @staticmethod
    def _position(msg: Message) -> int | None:
        """Where a message puts its sequence: its seq, or for end/1 the count of frames announced."""
        if isinstance(msg, EndMsg):
            return msg.n_frames - 1
        return getattr(msg, "seq", None)

    def _continues(self, held: Message, msg: Message) -> bool:
        pos, base = self._position(msg), self._position(held)
        return (msg.stream_id == held.stream_id and pos is not None and base is not None
                and 0 <= pos - base <= self.max_seq_jump)

    def _jump(self, tracker: SeqTracker, msg: Message) -> int:
        """How far ``msg`` jumps ahead of what its sequence expects next (0 for start/1)."""
        pos = self._position(msg)
        if pos is None:
            return 0
        if msg.stream_id != tracker.current:
            return pos  # a series seen first mid-way counts from 0
        return pos - (0 if tracker.last_seq is None else tracker.last_seq + 1)

    def _admit(self, msg: Message, key: str, tracker: SeqTracker, peer: Peer | None) -> bool:
        """Sequence checks of one decoded, authorised message; False if it is dropped (counted)."""
        series = key == "series"
        if (series and self.require_start and not isinstance(msg, StartMsg) and msg.stream_id != tracker.current
                and not tracker.is_stale(msg.stream_id)):
            self.rejects.count("no_start", f"{describe_message(msg)}: expected start/1 of the series first")
            return False
        result = tracker.observe(msg)
        if result.status is not SeqStatus.OK and not self._noted(msg, result):
            return False
        if series:
            self.authority.accepted(peer)
        self.received += 1
        return True

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


def describe_message(msg: Message) -> str:
    """E.g. ``frame/1 of series 'ab12' seq 7`` (for log lines and reject details)."""
    seq = getattr(msg, "seq", None)
    return f"{msg.type_string} of series {msg.stream_id!r}" + ("" if seq is None else f" seq {seq}")
