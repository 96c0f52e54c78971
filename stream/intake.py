"""What every receiving socket does with a message: validate, sequence-check, count.

:class:`Intake` is shared by :class:`~tiltstream.stream.transport.FrameReceiver` (lossless path)
and :class:`~tiltstream.stream.pubsub.Subscriber` (viewer path); :class:`ReceiverStats` is what
they report.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tiltstream.stream.messages import FrameMsg, Limits, Message
from tiltstream.stream.protocol import try_unpack
from tiltstream.stream.sockets import CurveClientConfig, CurveConfig
from tiltstream.stream.tracking import RejectCounter, SeqResult, SeqStatus, SeqTracker, sequence_key

__all__ = ["ReceiverStats", "Intake", "Curve", "Parts", "wait_ms", "MAX_TIMEOUT_MS"]

logger = logging.getLogger(__name__)

Curve = CurveConfig | CurveClientConfig | None
Parts = Sequence[Any]

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
