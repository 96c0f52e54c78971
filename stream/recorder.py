"""Recorder: the lossless frame stream to NXtomo recordings, one file per series.

A :class:`Recorder` receives ``start/1``, ``frame/1`` and ``end/1`` on a
:class:`~tiltstream.stream.transport.FrameReceiver` and appends every frame to an NXtomo file with
:class:`~tiltstream.stream.nxtomo.NXtomoWriter` (flushed per frame). A frame is *acknowledged* only
after its append returned: it is then counted in :attr:`RecorderStats.frames_written` and, every
``ack_every`` frames, logged at INFO as ``ack n=<frames in file> seq=<seq> file=<path>``. A recorder
killed at any moment leaves a file with every acknowledged frame.

Files and series
----------------
The first series goes to ``path``; each later series (a new ``stream_id``) to ``<stem>_002<suffix>``,
``<stem>_003<suffix>``, ... (the next name not taken). Existing files are never replaced unless
``overwrite``. A file is created with the series' first frame (a series without frames leaves no
file) and closed cleanly by its ``end/1``, by the next series, or by :meth:`Recorder.close`.

What goes in the file: the ``start/1`` fields (stream id, scheme, units, tilt range, frame shape and
dtype, and the free-form ``experiment`` metadata) as the recording's metadata; per frame the angle,
mid-exposure time and exposure, plus ``seq`` and each optional header field the series' first frame
carries (``dose_e_per_A2``, ``temperature_C``, ``stage_xyz``, ...) under ``/entry/frame_info``.
Optional fields that only later frames carry are not recorded (the writer warns once): HDF5 SWMR
files cannot gain datasets. A series joined mid-way (no ``start/1`` seen) is recorded with the
metadata ``"start_received": false``; the frames it missed are logged as a gap.

Frames whose shape differs from the series' first frame, or whose dtype does not cast safely to
it, are rejected (reason ``series_mismatch``); messages a recorder has no use for (volumes, ...) with
``unexpected_type``. Like every reject they are counted and logged, and recording goes on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from tiltstream.stream.messages import DEFAULT_LIMITS, EndMsg, FrameMsg, Limits, Message, StartMsg
from tiltstream.stream.nxtomo import NXtomoWriter
from tiltstream.stream.sockets import CurveClientConfig, CurveConfig
from tiltstream.stream.transport import DEFAULT_HWM, FrameReceiver

__all__ = ["Recorder", "RecorderStats", "SeriesFile", "series_path"]

logger = logging.getLogger(__name__)

#: Optional frame/1 header fields recorded per frame, with their per-frame shape.
FRAME_FIELDS: dict[str, tuple[int, ...]] = {
    "dose_e_per_A2": (),
    "temperature_C": (),
    "pixel_nm": (),
    "tilt_range_deg": (2,),
    "stage_xyz": (3,),
    "focus_index": (),
}


def series_path(path: str | os.PathLike, index: int) -> Path:
    """File of the ``index``-th series (1-based): ``path`` itself, then ``<stem>_002<suffix>``, ..."""
    p = Path(path)
    if index < 1:
        raise ValueError(f"index: expected >= 1, got {index}")
    return p if index == 1 else p.with_name(f"{p.stem}_{index:03d}{p.suffix}")


@dataclass
class SeriesFile:
    """One recording file.

    Attributes
    ----------
    path : the file.
    stream_id : the series recorded in it.
    frames : frames written (acknowledged).
    end_reason : the ``end/1`` reason; None while open or when the series ended without one.
    announced : frame count the sender announced in ``end/1``, or None.
    """

    path: Path
    stream_id: str
    frames: int = 0
    end_reason: str | None = None
    announced: int | None = None


@dataclass(frozen=True)
class RecorderStats:
    """What a :class:`Recorder` did so far.

    Attributes
    ----------
    frames_written : acknowledged frames, all files together.
    files : every file written, in order.
    rejected : messages rejected (invalid, out of sequence, or unusable), total.
    rejects_by_reason : reason -> count.
    gaps : jumps in ``seq`` seen.
    missing : frames known never to have arrived.
    last_seq : seq of the last acknowledged frame, or None.
    """

    frames_written: int
    files: tuple[SeriesFile, ...]
    rejected: int
    rejects_by_reason: dict[str, int]
    gaps: int
    missing: int
    last_seq: int | None

    def summary(self) -> str:
        """One line for people, e.g. ``recorded 240 frames in 1 file (run.h5); 0 rejected; 0 missing``."""
        names = ", ".join(str(f.path) for f in self.files) or "no file"
        n_files = f"{len(self.files)} file{'s' if len(self.files) != 1 else ''}"
        text = f"recorded {self.frames_written} frames in {n_files} ({names}); {self.rejected} rejected"
        if self.rejects_by_reason:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(self.rejects_by_reason.items())) + ")"
        return text + f"; {self.missing} missing in {self.gaps} gaps"


class Recorder:
    """Record the lossless frame stream at ``endpoint`` into NXtomo files (see module docstring).

    Parameters
    ----------
    endpoint : where the frame stream is, e.g. ``"tcp://127.0.0.1:5555"``.
    path : file of the first series (``.h5``/``.nxs``); later series get numbered names.
    bind : bind ``endpoint`` (senders connect) instead of connecting to it.
    context, curve, rcvhwm, limits : for the :class:`~.transport.FrameReceiver`.
    overwrite : replace existing files instead of refusing (first file) or skipping names (later).
    ack_every : log an ``ack`` line at INFO every this many frames (0: never).
    on_ack : called as ``on_ack(path, frames_in_file, seq)`` after each acknowledged frame.
    memory_budget : bytes the receiving queue may hold; a larger message part disconnects its sender
        (default :func:`~tiltstream.stream.budget.default_budget_bytes`).
    clock : monotonic clock in seconds of the idle timeout (tests pass a fake).

    Raises
    ------
    FileExistsError
        if ``path`` exists and not ``overwrite`` (checked before anything is received).
    """

    def __init__(
        self,
        endpoint: str,
        path: str | os.PathLike,
        *,
        bind: bool = False,
        context: zmq.Context | None = None,
        curve: CurveConfig | CurveClientConfig | None = None,
        rcvhwm: int = DEFAULT_HWM,
        limits: Limits = DEFAULT_LIMITS,
        overwrite: bool = False,
        ack_every: int = 1,
        on_ack: Callable[[Path, int, int], None] | None = None,
        memory_budget: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"{self.path}: expected an existing folder, got no folder {self.path.parent}"
            )
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: refusing to replace an existing file (use overwrite)")
        self.overwrite = overwrite
        self.ack_every = int(ack_every)
        self.on_ack = on_ack
        self.clock = clock
        self.receiver = FrameReceiver(
            endpoint, bind=bind, rcvhwm=rcvhwm, context=context, curve=curve, limits=limits,
            name=f"recorder {endpoint}", require_start=True, memory_budget=memory_budget,
        )
        self.endpoint = self.receiver.endpoint
        self.frames_written = 0
        self.last_seq: int | None = None
        self._files: list[SeriesFile] = []
        self._writer: NXtomoWriter | None = None
        self._current: SeriesFile | None = None
        self._start: StartMsg | None = None
        self._fields: list[str] = []
        logger.info("recorder listening on %s, recording to %s", self.endpoint, self.path)

    # ------------------------------------------------------------------ running
    def run(
        self,
        stop_event: threading.Event | None = None,
        max_frames: int | None = None,
        idle_timeout_s: float | None = None,
        *,
        until_end: bool = False,
        poll_ms: int = 100,
    ) -> RecorderStats:
        """Record until told to stop; return the stats. The current file stays open (see :meth:`close`).

        Parameters
        ----------
        stop_event : stop when set (checked every ``poll_ms`` milliseconds).
        max_frames : stop once this many frames were written by this recorder (all files).
        idle_timeout_s : stop after this many seconds (of :attr:`clock`) without an accepted message.
        until_end : stop after the first ``end/1`` that closes a file.
        poll_ms : longest wait for one message, milliseconds.
        """
        last_activity = self.clock()
        while True:
            if stop_event is not None and stop_event.is_set():
                logger.info("recorder stopping: asked to")
                break
            if max_frames is not None and self.frames_written >= max_frames:
                logger.info("recorder stopping: %d frames written", self.frames_written)
                break
            wait_ms = poll_ms
            if idle_timeout_s is not None:
                left = idle_timeout_s - (self.clock() - last_activity)
                if left <= 0:
                    logger.info("recorder stopping: nothing received for %.1f s", idle_timeout_s)
                    break
                wait_ms = min(wait_ms, max(1, int(left * 1000)))
            msg = self.receiver.recv(timeout_ms=wait_ms)
            if msg is None:
                continue
            last_activity = self.clock()
            closed = self.handle(msg)
            if until_end and closed:
                logger.info("recorder stopping: series ended")
                break
        return self.stats

    def handle(self, msg: Message) -> bool:
        """Act on one accepted message; return True if it was an ``end/1`` that closed a file."""
        if isinstance(msg, FrameMsg):
            self._on_frame(msg)
        elif isinstance(msg, StartMsg):
            self._on_start(msg)
        elif isinstance(msg, EndMsg):
            return self._on_end(msg)
        else:
            self.receiver.rejects.count(
                "unexpected_type", f"{msg.type_string}: a recorder takes start/1, frame/1, end/1"
            )
        return False

    # ------------------------------------------------------------------ messages
    def _on_start(self, msg: StartMsg) -> None:
        if self._current is not None and self._current.stream_id != msg.stream_id:
            logger.warning(
                "series %r ended without end/1 (series %r started); closing %s",
                self._current.stream_id, msg.stream_id, self._current.path,
            )
            self._close_file()
        self._start = msg
        logger.info(
            "series %r started: frames %s %s, scheme %s; file opens with its first frame",
            msg.stream_id, msg.frame_shape, msg.dtype, msg.scheme,
        )

    def _on_frame(self, msg: FrameMsg) -> None:
        if self._current is None or self._current.stream_id != msg.stream_id:
            if self._current is not None:
                logger.warning(
                    "series %r ended without end/1 (frames of series %r arrive); closing %s",
                    self._current.stream_id, msg.stream_id, self._current.path,
                )
                self._close_file()
            self._open(msg)
        writer, current = self._writer, self._current
        assert writer is not None and current is not None
        data = msg.data
        if data.shape != writer.frame_shape or not np.can_cast(data.dtype, writer.dtype, "safe"):
            self.receiver.rejects.count(
                "series_mismatch",
                f"frame seq {msg.seq}: expected {writer.frame_shape} {writer.dtype} like the series' "
                f"first frame, got {data.shape} {data.dtype}",
            )
            return
        extra = {name: getattr(msg, name) for name in self._fields}
        n = writer.append(
            data, angle_deg=msg.angle_deg, t_s=msg.t_s, exposure_s=msg.exposure_s, seq=msg.seq, **extra
        )
        current.frames = n
        self.frames_written += 1
        self.last_seq = msg.seq
        if self.ack_every and n % self.ack_every == 0:
            logger.info("ack n=%d seq=%d file=%s", n, msg.seq, current.path)
        if self.on_ack is not None:
            self.on_ack(current.path, n, msg.seq)

    def _on_end(self, msg: EndMsg) -> bool:
        current = self._current
        if current is None or current.stream_id != msg.stream_id:
            logger.info("series %r ended (%s) with no frames recorded; no file", msg.stream_id, msg.reason)
            return False
        current.end_reason, current.announced = msg.reason, msg.n_frames
        log = logger.warning if msg.n_frames != current.frames else logger.info
        log(
            "series %r ended (%s): %d frames in %s, the sender announced %d",
            msg.stream_id, msg.reason, current.frames, current.path, msg.n_frames,
        )
        self._close_file()
        return True

    # ------------------------------------------------------------------ files
    def _next_path(self) -> Path:
        index = len(self._files) + 1
        while True:
            path = series_path(self.path, index)
            if self.overwrite or not path.exists():
                return path
            logger.warning("%s exists; series %d goes to the next free name", path, len(self._files) + 1)
            index += 1

    def _open(self, first: FrameMsg) -> None:
        start = self._start if self._start is not None and self._start.stream_id == first.stream_id else None
        self._fields = [name for name in FRAME_FIELDS if getattr(first, name) is not None]
        metadata: dict[str, Any] = {
            "stream_id": first.stream_id,
            "start_received": start is not None,
            "recorder": {
                "endpoint": self.endpoint,
                "series_index": len(self._files) + 1,
                "opened_utc": datetime.now(timezone.utc).isoformat(),
                "first_seq": first.seq,
            },
        }
        pixel_nm = first.pixel_nm
        if start is not None:
            metadata.update(
                scheme=start.scheme, units=start.units, tilt_range_deg=start.tilt_range_deg,
                frame_shape=start.frame_shape, dtype=start.dtype, experiment=start.experiment,
            )
            pixel_nm = start.pixel_nm if start.pixel_nm is not None else pixel_nm
            if tuple(start.frame_shape) != first.data.shape or start.dtype != first.data.dtype.str:
                logger.warning(
                    "series %r: start/1 announced frames %s %s, the first frame is %s %s; recording "
                    "frames like the first one",
                    first.stream_id, start.frame_shape, start.dtype, first.data.shape, first.data.dtype.str,
                )
        path = self._next_path()
        self._writer = NXtomoWriter(
            path,
            frame_shape=first.data.shape,
            dtype=first.data.dtype,
            pixel_nm=pixel_nm,
            metadata=metadata,
            extra_fields={"seq": (), **{name: FRAME_FIELDS[name] for name in self._fields}},
            overwrite=self.overwrite,
        )
        self._current = SeriesFile(path=path, stream_id=first.stream_id)
        self._files.append(self._current)
        if first.seq:
            logger.warning("series %r: recording starts at seq %d, earlier frames were not received",
                           first.stream_id, first.seq)
        logger.info("series %r -> %s", first.stream_id, path)

    def _close_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None
        self._current = None

    # ------------------------------------------------------------------ state
    @property
    def stats(self) -> RecorderStats:
        """Counts so far (a snapshot)."""
        rx = self.receiver.stats()
        return RecorderStats(
            frames_written=self.frames_written,
            files=tuple(SeriesFile(**vars(f)) for f in self._files),
            rejected=rx.rejected,
            rejects_by_reason=rx.rejects_by_reason,
            gaps=rx.gaps,
            missing=rx.missing,
            last_seq=self.last_seq,
        )

    def close(self) -> None:
        """Close the current file cleanly (marked closed) and the socket (idempotent)."""
        try:
            self._close_file()
        finally:
            self.receiver.close()
            self.receiver.rejects.flush()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
