"""Bounded histories the monitor keeps: published volumes (for the time slider) and scalar traces."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["VolumeEntry", "VolumeHistory", "Trace"]


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


class VolumeHistory:
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
        if capacity < 1:
            raise ValueError(f"capacity: expected at least 1 volume, got {capacity}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes: expected a positive byte count, got {max_bytes}")
        self.capacity = int(capacity)
        self.max_bytes = int(max_bytes)
        self._entries: deque[VolumeEntry] = deque()
        self._nbytes = 0
        self.evicted = 0

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
        while len(self._entries) > 1 and (len(self._entries) > self.capacity or self._nbytes > self.max_bytes):
            self._nbytes -= self._entries.popleft().data.nbytes
            self.evicted += 1
        return not replaced

    def clear(self) -> None:
        self._entries.clear()
        self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes of volume data held."""
        return self._nbytes

    def index_of_seq(self, seq: int) -> int | None:
        """Position of the entry with publication number ``seq``, or None when it is not held."""
        for i in range(len(self._entries) - 1, -1, -1):
            if self._entries[i].seq == seq:
                return i
        return None

    def times(self) -> np.ndarray:
        """(N,) times of the entries, seconds since stream start."""
        return np.fromiter((e.t_s for e in self._entries), dtype=np.float64, count=len(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i: int) -> VolumeEntry:
        return self._entries[i]

    def __iter__(self) -> Iterator[VolumeEntry]:
        return iter(list(self._entries))


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

    @property
    def last(self) -> float | None:
        return self._v[-1] if self._v else None

    def __len__(self) -> int:
        return len(self._t)
