"""Bounded histories the monitor keeps: published volumes (for the time slider) and scalar traces.

:class:`VolumeHistory` keeps the stream of volumes of a streaming method (the SIRT: one estimate per
update, each for "now"); :class:`EstimateHistory` keeps the newest 4-D estimate of a model fitted to
the whole series (the DIP: one estimate is a burst of volumes at times spread over the series).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeEntry", "VolumeHistory", "EstimateHistory", "Trace"]


@dataclass(frozen=True)
class VolumeEntry:
    """One published volume.

    Attributes
    ----------
    seq : publication number (``volume/1`` seq).
    t_s : time the volume represents, seconds since stream start.
    data : (Z, Y, X) array, treated as read-only.
    source : producing method, e.g. ``"sirt"``.
    n_frames_used : frames that went into it.
    voxel_nm : voxel edge of ``data``, nm; None when unknown.
    received_s : monotonic clock when it arrived, s.
    """

    seq: int
    t_s: float
    data: np.ndarray
    source: str
    n_frames_used: int
    voxel_nm: float | None
    received_s: float


class _Bounded:
    """What both histories share: ``_entries`` bounded in count and in bytes of volume data."""

    _entries: deque[VolumeEntry] | list[tuple[int, VolumeEntry]]

    def __init__(self, capacity: int, max_bytes: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity: expected at least 1 volume, got {capacity}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes: expected a positive byte count, got {max_bytes}")
        self.capacity, self.max_bytes = int(capacity), int(max_bytes)
        self._nbytes = 0
        self.evicted = 0

    def _over_bounds(self) -> bool:
        """More volumes or bytes than the bounds allow (one volume alone never is)."""
        return len(self._entries) > 1 and (len(self._entries) > self.capacity or self._nbytes > self.max_bytes)

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of volume data held."""
        return self._nbytes

    def times(self) -> np.ndarray:
        """(N,) times of the entries (in their order), seconds since stream start."""
        return np.fromiter((e.t_s for e in self), dtype=np.float64, count=len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)


class VolumeHistory(_Bounded):
    """A ring buffer of :class:`VolumeEntry`, oldest first, bounded in count and in bytes.

    Parameters
    ----------
    capacity : most volumes kept.
    max_bytes : most bytes of volume data kept; the newest volume is always kept even if larger.

    A volume for the same time point and frame count as the newest entry (the service re-sending or
    refining its latest estimate while no frames arrive) replaces that entry instead of being added,
    so an idle stream does not fill the history with copies.
    """

    def __init__(self, capacity: int = 64, max_bytes: int = 1 << 30) -> None:
        super().__init__(capacity, max_bytes)
        self._entries: deque[VolumeEntry] = deque()

    def append(self, entry: VolumeEntry) -> bool:
        """Add ``entry`` (or replace the newest, see above); evict the oldest beyond the bounds.

        Returns True when it was added as a new entry, False when it replaced the newest.
        """
        last = self._entries[-1] if self._entries else None
        replaced = last is not None and last.t_s == entry.t_s and last.n_frames_used == entry.n_frames_used
        if replaced:
            self._nbytes -= self._entries.pop().data.nbytes
        self._entries.append(entry)
        self._nbytes += entry.data.nbytes
        while self._over_bounds():
            self._nbytes -= self._entries.popleft().data.nbytes
            self.evicted += 1
        return not replaced

    def index_of_seq(self, seq: int) -> int | None:
        """Position of the entry with publication number ``seq``, or None when it is not held."""
        return next((i for i in range(len(self._entries) - 1, -1, -1) if self._entries[i].seq == seq), None)

    def __getitem__(self, i: int) -> VolumeEntry:
        return self._entries[i]

    def __iter__(self) -> Iterator[VolumeEntry]:
        return iter(list(self._entries))


class EstimateHistory(_Bounded):
    """The volumes of the newest 4-D estimate(s), ordered by time, bounded in count and in bytes.

    An estimate arrives as a burst of ``volume/1`` messages at increasing times spread over the
    series so far, all with the same ``n_frames_used``, followed by a ``metrics/1``
    (:meth:`close_estimate`). A volume starts a new estimate when the previous one was closed, when
    its frame count differs, or when its time is not after the previous volume's (a re-send).

    The newest estimate is the best one at every time it covers: each of its volumes replaces the
    volumes of older estimates between the estimate's first time and its own. Older volumes outside
    the newest estimate's span (or at times whose new volume was lost on the way) stay until evicted.
    Beyond the bounds, volumes of the oldest estimate go first, earliest first; the newest volume
    is always kept.

    Parameters
    ----------
    capacity : most volumes kept.
    max_bytes : most bytes of volume data kept.
    """

    def __init__(self, capacity: int = 64, max_bytes: int = 1 << 28) -> None:
        super().__init__(capacity, max_bytes)
        self._entries: list[tuple[int, VolumeEntry]] = []  # (estimate number, entry), by time
        self.estimates = 0  # estimates started so far; the newest is number ``estimates``
        self._open: list[float] | None = None  # [first t, last t] of the estimate still arriving
        self._open_frames: int | None = None

    def append(self, entry: VolumeEntry) -> None:
        """Add one volume of an estimate (see the class docstring)."""
        t = float(entry.t_s)
        if self._open is None or entry.n_frames_used != self._open_frames or t <= self._open[1]:
            self.estimates += 1
            self._open, self._open_frames = [t, t], int(entry.n_frames_used)
        self._open[1] = t
        first, number = self._open[0], self.estimates
        keep = []
        for item in self._entries:
            n, e = item
            if n != number and first <= e.t_s <= t:
                self._nbytes -= e.data.nbytes
            else:
                keep.append(item)
        keep.append((number, entry))
        keep.sort(key=lambda item: item[1].t_s)
        self._entries = keep
        self._nbytes += entry.data.nbytes
        while self._over_bounds():
            oldest = min(range(len(self._entries)), key=lambda i: (self._entries[i][0], self._entries[i][1].t_s))
            if self._entries[oldest][1] is entry:  # the newest volume stays: drop the earliest other one
                oldest = 1 if oldest == 0 else 0
            self._nbytes -= self._entries.pop(oldest)[1].data.nbytes
            self.evicted += 1

    def close_estimate(self) -> None:
        """The current estimate is complete (its ``metrics/1`` arrived): the next volume starts a new one."""
        self._open = None

    def clear(self) -> None:
        super().clear()
        self._open = None

    def estimate_of(self, i: int) -> int:
        """Number of the estimate entry ``i`` belongs to (1 for the first; :attr:`estimates` is the newest)."""
        return self._entries[i][0]

    def __getitem__(self, i: int) -> VolumeEntry:
        return self._entries[i][1]

    def __iter__(self) -> Iterator[VolumeEntry]:
        return iter([e for _, e in self._entries])


class Trace:
    """A bounded time series (t in seconds since stream start, value), oldest points dropped first."""

    def __init__(self, maxlen: int = 20000) -> None:
        self._t: deque[float] = deque(maxlen=maxlen)
        self._v: deque[float] = deque(maxlen=maxlen)

    def append(self, t_s: float, value: float) -> None:
        self._t.append(float(t_s))
        self._v.append(float(value))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``(t (N,), values (N,))`` as float64 copies."""
        return np.array(self._t, dtype=np.float64), np.array(self._v, dtype=np.float64)

    def __len__(self) -> int:
        return len(self._t)
