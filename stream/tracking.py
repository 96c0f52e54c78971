"""Receiver bookkeeping: sequence tracking and counted, rate-limited rejects.

:class:`SeqTracker` follows one series by ``stream_id`` and ``seq`` and says what each message is
(the next one, a gap, a duplicate, a stale series, ...). :class:`RejectCounter` counts rejected
messages by reason and logs them without flooding the log. Both are pure bookkeeping: no sockets.
They are re-exported by :mod:`tiltstream.stream.protocol`.

Reject reasons are the codec's (:data:`~tiltstream.stream.messages.REASONS`) plus those a receiver
gives for messages that decode but are not taken: the ordering reasons in :data:`SEQ_REASONS`, a
sender that is not the series' owner (``foreign_sender``), frames of a series never started
(``no_start``), a forged jump ahead in ``seq`` (``implausible_seq``), and the consumers' own
(``series_mismatch``, ``unexpected_type``, ``over_budget``).
"""

from __future__ import annotations

import enum
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

from tiltstream.stream.messages import EndMsg, Message, ProtocolError, StartMsg

__all__ = [
    "SeqStatus",
    "SeqResult",
    "SeqTracker",
    "SeqNumbers",
    "sequence_key",
    "RejectCounter",
    "SEQ_REASONS",
]

logger = logging.getLogger(__name__)

class SeqStatus(enum.Enum):
    """Outcome of one :class:`SeqTracker` observation."""

    OK = "ok"  #: the expected next seq
    NEW_SERIES = "new_series"  #: first sight of a stream_id; the tracker switched to it
    GAP = "gap"  #: accepted, but the seqs in ``missing`` never arrived
    DUPLICATE = "duplicate"  #: seq equal to the last one (or a repeated start); reject
    OUT_OF_ORDER = "out_of_order"  #: seq below the last one; reject
    STALE = "stale"  #: stream_id of an earlier or ended series; reject
    INCONSISTENT = "inconsistent"  #: end/1 counts fewer frames than were seen


_REJECTED = frozenset({SeqStatus.DUPLICATE, SeqStatus.OUT_OF_ORDER, SeqStatus.STALE})

#: Reject reasons for messages that decode but are out of sequence (``SeqStatus.value`` of the
#: statuses whose :attr:`SeqResult.accepted` is False).
SEQ_REASONS: frozenset[str] = frozenset(status.value for status in _REJECTED)


class SeqResult(NamedTuple):
    """What :class:`SeqTracker` made of one message (an immutable record).

    Attributes
    ----------
    status : see :class:`SeqStatus`.
    stream_id : the series the message claimed.
    seq : its seq (None for start/end).
    missing : seqs now known to be lost (a ``range``, cheap even for huge jumps).
    """

    status: SeqStatus
    stream_id: str
    seq: int | None = None
    missing: range = range(0)

    @property
    def accepted(self) -> bool:
        """False for duplicates, out-of-order and stale messages, which should be dropped."""
        return self.status not in _REJECTED


class SeqTracker:
    """Follows one series at a time by ``stream_id`` and ``seq`` (0, 1, 2, ...).

    A stream_id not seen before starts a new series (the previous one becomes stale); messages
    of stale or ended series are rejected, as are repeated and decreasing seqs. Gaps are reported
    as ranges of missing seqs, counting from 0 for a series first seen mid-way. Use one tracker
    per sequence (:func:`sequence_key`: the frames of a series; the volumes; ...). Not
    thread-safe: call it from the receiving loop.

    Parameters
    ----------
    max_old_series : how many earlier stream_ids are remembered as stale.
    gap_log_level : logging level of the line each gap logs (WARNING; a viewer, whose gaps are
        expected drops shown in its status, logs them at INFO).
    gap_log_period_s : at most one gap line per this many seconds; the next line says how many
        gaps it summarises (0: a line for every gap, as the lossless path logs them).
    clock : monotonic time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        max_old_series: int = 1024,
        gap_log_level: int = logging.WARNING,
        gap_log_period_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gap_log_level = gap_log_level
        self.gap_log_period_s = float(gap_log_period_s)
        self._clock = clock
        self._gap_logged_at = -math.inf
        self._gaps_unlogged = 0
        self._old: deque[str] = deque(maxlen=max_old_series)
        self._old_set: set[str] = set()
        self.current: str | None = None
        self.last_seq: int | None = None
        self.n_missing = 0
        self.n_rejected = 0

    def is_stale(self, stream_id: str) -> bool:
        """Whether ``stream_id`` is an earlier or ended series."""
        return stream_id in self._old_set

    def _retire_current(self) -> None:
        if self.current is not None:
            if len(self._old) == self._old.maxlen:
                self._old_set.discard(self._old[0])
            self._old.append(self.current)
            self._old_set.add(self.current)
        self.current = None
        self.last_seq = None

    def _result(
        self, status: SeqStatus, stream_id: str, seq: int | None, missing: range = range(0)
    ) -> SeqResult:
        self.n_missing += len(missing)
        if status in _REJECTED:
            self.n_rejected += 1
        if missing:
            self._log_gap(stream_id, missing)
        return SeqResult(status, stream_id, seq, missing)

    def _log_gap(self, stream_id: str, missing: range) -> None:
        if self.gap_log_period_s > 0:
            now = self._clock()
            if now - self._gap_logged_at < self.gap_log_period_s:
                self._gaps_unlogged += 1
                return
            self._gap_logged_at = now
        more, self._gaps_unlogged = self._gaps_unlogged, 0
        logger.log(
            self.gap_log_level,
            "series %s: %d missing seq in [%d, %d)%s",
            stream_id, len(missing), missing.start, missing.stop,
            f" (and {more} more gaps in the last {self.gap_log_period_s:g} s)" if more else "",
        )

    def begin(self, stream_id: str) -> SeqResult:
        """Record a ``start/1`` of ``stream_id``."""
        if self.is_stale(stream_id):
            return self._result(SeqStatus.STALE, stream_id, None)
        if stream_id == self.current:
            return self._result(SeqStatus.DUPLICATE, stream_id, None)
        self._retire_current()
        self.current = stream_id
        return self._result(SeqStatus.NEW_SERIES, stream_id, None)

    def check(self, stream_id: str, seq: int) -> SeqResult:
        """Record a message with ``seq`` (≥ 0) of ``stream_id``."""
        last = self.last_seq
        if stream_id == self.current and last is not None and seq == last + 1:
            self.last_seq = seq  # the common case; the current series is never stale
            return SeqResult(SeqStatus.OK, stream_id, seq)
        if seq < 0:
            raise ValueError(f"seq: expected >= 0, got {seq}")
        if self.is_stale(stream_id):
            return self._result(SeqStatus.STALE, stream_id, seq)
        if stream_id != self.current:
            self._retire_current()
            self.current, self.last_seq = stream_id, seq
            return self._result(SeqStatus.NEW_SERIES, stream_id, seq, range(0, seq))
        expected = 0 if self.last_seq is None else self.last_seq + 1
        if seq < expected:
            status = SeqStatus.DUPLICATE if seq == self.last_seq else SeqStatus.OUT_OF_ORDER
            return self._result(status, stream_id, seq)
        self.last_seq = seq
        missing = range(expected, seq)
        return self._result(SeqStatus.GAP if missing else SeqStatus.OK, stream_id, seq, missing)

    def finish(self, stream_id: str, n_frames: int) -> SeqResult:
        """Record an ``end/1`` saying ``n_frames`` were sent; the series becomes stale."""
        if self.is_stale(stream_id):
            return self._result(SeqStatus.STALE, stream_id, None)
        if stream_id != self.current:
            self._retire_current()
            self.current = stream_id
            result = self._result(SeqStatus.NEW_SERIES, stream_id, None, range(0, n_frames))
        else:
            expected = 0 if self.last_seq is None else self.last_seq + 1
            missing = range(expected, n_frames)
            if n_frames < expected:
                result = self._result(SeqStatus.INCONSISTENT, stream_id, None)
            else:
                status = SeqStatus.GAP if missing else SeqStatus.OK
                result = self._result(status, stream_id, None, missing)
        self._retire_current()
        return result

    def observe(self, msg: Message) -> SeqResult:
        """Dispatch a message: start → :meth:`begin`, end → :meth:`finish`, else :meth:`check`."""
        if isinstance(msg, StartMsg):
            return self.begin(msg.stream_id)
        if isinstance(msg, EndMsg):
            return self.finish(msg.stream_id, msg.n_frames)
        return self.check(msg.stream_id, msg.seq)


#: Message types numbered together as one series: frames count 0, 1, 2, ...; start/1 and end/1
#: (no seq) open and close that count.
_SERIES_TYPES = frozenset({"start", "frame", "end"})


def sequence_key(name: str) -> str:
    """The numbered sequence that messages of type ``name`` belong to, within their series.

    ``"series"`` for ``start``/``frame``/``end``; for published results their type (``"volume"``,
    ``"slices"``, ``"metrics"``), whichever method made them. Each sequence counts its own seq
    from 0 in every series (:class:`SeqNumbers`), and a receiver checks each with its own
    :class:`SeqTracker`: a volume published only every few updates is no gap.
    """
    return "series" if name in _SERIES_TYPES else name


class SeqNumbers:
    """Numbers a producer's outgoing messages 0, 1, 2, ... per :func:`sequence_key` and series.

    Every sequence starts again at 0 when the series (``stream_id``) changes. Thread-safe, so
    several threads (e.g. streaming SIRT and an online DIP model) can number into one sequence.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stream_id: str | None = None
        self._next: dict[str, int] = {}

    def next(self, stream_id: str, name: str) -> int:
        """The seq of the next message of type ``name`` (``"volume"``, ...) of ``stream_id``."""
        key = sequence_key(name)
        with self._lock:
            if stream_id != self._stream_id:
                self._stream_id = stream_id
                self._next = {}
            seq = self._next.get(key, 0)
            self._next[key] = seq + 1
        return seq


class RejectCounter:
    """Counts rejected messages by reason and logs them without flooding the log.

    Within each window of ``interval_s`` the first ``burst`` rejects are logged one by one at
    WARNING; later ones are only counted, and a single summary line reports them when the next
    window opens (or on :meth:`flush`). Thread-safe.

    Parameters
    ----------
    name : prefix for log lines (e.g. the socket address).
    burst : rejects logged individually per window.
    interval_s : window length, seconds.
    clock : monotonic time source in seconds (injectable for tests).
    """

    def __init__(
        self,
        *,
        name: str = "receiver",
        burst: int = 10,
        interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.burst = burst
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._by_reason: dict[str, int] = {}
        self._total = 0
        self._window_start = clock()
        self._logged = 0
        self._suppressed: dict[str, int] = {}

    @property
    def total(self) -> int:
        """Rejects recorded since creation (or :meth:`reset`)."""
        return self._total

    @property
    def by_reason(self) -> dict[str, int]:
        """A copy of reason -> count."""
        with self._lock:
            return dict(self._by_reason)

    def snapshot(self) -> dict[str, Any]:
        """``{"total": int, "by_reason": {reason: count}}``, consistent and copied."""
        with self._lock:
            return {"total": self._total, "by_reason": dict(self._by_reason)}

    def record(self, error: ProtocolError) -> None:
        """Count one reject and log it (rate-limited)."""
        self.count(error.reason, error.detail)

    def count(self, reason: str, detail: str) -> None:
        """Count one reject that is not a :class:`ProtocolError` (e.g. ``"duplicate"``)."""
        with self._lock:
            self._total += 1
            self._by_reason[reason] = self._by_reason.get(reason, 0) + 1
            if self._clock() - self._window_start >= self.interval_s:
                self._flush_locked()
            if self._logged < self.burst:
                self._logged += 1
                logger.warning("%s: rejected message (%s): %.200s", self.name, reason, detail)
            else:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1

    def flush(self) -> None:
        """Log the summary of suppressed rejects now and start a new window."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        now = self._clock()
        if self._suppressed:
            logger.warning(
                "%s: %d more rejects not logged in the last %.1f s: %s",
                self.name,
                sum(self._suppressed.values()),
                now - self._window_start,
                dict(sorted(self._suppressed.items())),
            )
        self._suppressed = {}
        self._logged = 0
        self._window_start = now

    def reset(self) -> None:
        """Zero all counts."""
        with self._lock:
            self._flush_locked()
            self._by_reason = {}
            self._total = 0
