"""Replay a recorded tilt series as a live stream.

:func:`replay` reads any file :func:`tiltstream.stream.read_series` reads (tiltstream/NXtomo
recordings, MRC + ``.rawtlt``, TIFF + CSV) and publishes it through a
:class:`~tiltstream.acquire.publisher.FramePublisher`: at real speed (frame k is sent
``(t_k − t_first) / speed`` wall seconds after the first, with the file's mid-exposure times),
``speed`` times faster, or with ``speed="max"`` as fast as the sink takes the frames (a lossless
sink that blocks paces the replay: backpressure). Frames, angles and times go out exactly as read;
so do the per-frame fields ``frame/1`` carries (dose, temperature, stage position, focus index).
``start/1`` carries the file's metadata in ``experiment`` (a ``"replay"`` entry says from where).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.acquire.pacing import Pacer, parse_speed
from tiltstream.acquire.publisher import FramePublisher, publisher_for
from tiltstream.acquire.sinks import Sink
from tiltstream.stream.messages import DEFAULT_LIMITS, ProtocolError, StartMsg
from tiltstream.stream.protocol import pack
from tiltstream.stream.readers import read_series
from tiltstream.stream.series import TiltSeries

__all__ = ["replay", "replay_series", "ReplayStats", "jsonable"]

logger = logging.getLogger(__name__)

#: Per-frame extra fields of a series that ``frame/1`` carries, with their per-frame shape.
_FRAME_EXTRAS: dict[str, tuple[int, ...]] = {
    "dose_e_per_A2": (), "temperature_C": (), "pixel_nm": (), "tilt_range_deg": (2,), "stage_xyz": (3,),
    "focus_index": (),
}


@dataclass(frozen=True)
class ReplayStats:
    """What one replay did.

    Attributes
    ----------
    stream_id : id of the published series.
    n_frames : frames sent.
    wall_s : duration, wall seconds.
    stopped : True if the stop event ended it early.
    max_lag_s : largest delay behind the paced schedule, wall seconds (0 at ``speed="max"``).
    """

    stream_id: str
    n_frames: int
    wall_s: float
    stopped: bool
    max_lag_s: float


def jsonable(value: Any, *, depth: int = 0, max_depth: int = 12) -> Any:
    """``value`` as JSON-like data the wire's ``experiment`` map accepts.

    numpy scalars/arrays become numbers/lists, tuples lists, paths and unknown objects strings;
    non-finite floats become None; nesting deeper than ``max_depth`` becomes its string form.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if depth >= max_depth:
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, depth=depth + 1, max_depth=max_depth) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, depth=depth + 1, max_depth=max_depth) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _fit_header(experiment: dict[str, Any], make: Any) -> dict[str, Any]:
    """Drop the largest metadata entries until the ``start/1`` header fits the wire's limit."""
    experiment = dict(experiment)
    while True:
        try:
            pack(make(experiment))
            return experiment
        except ProtocolError as exc:
            if exc.reason != "too_large" or not experiment:
                raise
        sizes = {k: len(repr(v)) for k, v in experiment.items() if k != "replay"}
        if not sizes:
            raise ValueError("start/1 header too large even without the file's metadata")
        key = max(sizes, key=sizes.__getitem__)
        logger.warning("metadata %r (%d characters) left out of start/1: header above %d bytes",
                       key, sizes[key], DEFAULT_LIMITS.max_header_bytes)
        experiment.pop(key)
        experiment.setdefault("omitted_metadata", []).append(key)


def _scheme(metadata: Mapping[str, Any]) -> str:
    for where in (metadata, metadata.get("experiment"), metadata.get("simulation")):
        if isinstance(where, Mapping) and isinstance(where.get("scheme"), str) and where["scheme"]:
            return where["scheme"]
    return "unknown"


def _frame_fields(series: TiltSeries, k: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, shape in _FRAME_EXTRAS.items():
        values = series.extra.get(name)
        if values is None:
            continue
        v = np.asarray(values)[k]
        if np.shape(v) != shape or not np.all(np.isfinite(v)):
            continue  # NaN marks "this frame did not carry it"
        out[name] = int(v) if name == "focus_index" else (float(v) if shape == () else tuple(float(x) for x in v))
    return out


def replay_series(
    series: TiltSeries,
    sink: Sink | str | Sequence[Sink | str] | FramePublisher,
    *,
    speed: float | str = 1.0,
    start_frame: int = 0,
    stop_event: threading.Event | None = None,
    experiment: Mapping[str, Any] | None = None,
    send_timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Publish an in-memory :class:`~tiltstream.stream.TiltSeries`; see :func:`replay`."""
    n = series.n_frames
    if int(start_frame) != start_frame or not 0 <= start_frame < n:
        raise ValueError(f"start_frame: expected 0 ≤ start_frame < {n}, got {start_frame!r}")
    start_frame = int(start_frame)
    pacer = Pacer(parse_speed(speed), stop_event=stop_event, clock=clock)
    metadata = jsonable(series.metadata)
    metadata["replay"] = {"source": series.source, "speed": "max" if math.isinf(pacer.speed) else pacer.speed,
                          "start_frame": start_frame, "n_frames_in_file": n}
    metadata.update(jsonable(dict(experiment or {})))
    angles = series.angles_deg
    tilt_range = _as_range(metadata.get("tilt_range_deg"))
    if tilt_range is None and angles.max() > angles.min():
        tilt_range = (float(angles.min()), float(angles.max()))
    scheme = _scheme(series.metadata)
    frames = np.asarray(series.frames)
    shape, dtype = (int(frames.shape[1]), int(frames.shape[2])), frames.dtype

    def make(exp: dict[str, Any]) -> StartMsg:
        return StartMsg(stream_id="0" * 32, frame_shape=shape, dtype=np.dtype("<f4").str, scheme=scheme,
                        pixel_nm=series.pixel_nm, tilt_range_deg=tilt_range, experiment=exp)

    metadata = _fit_header(metadata, make)
    pub, owns = publisher_for(sink, metadata, frame_shape=shape, dtype=dtype, pixel_nm=series.pixel_nm, scheme=scheme,
                              tilt_range_deg=tilt_range, send_timeout_s=send_timeout_s)
    pub.delivery.stop_event = stop_event
    exposure = series.exposure_s
    sent, max_lag = 0, 0.0
    began = clock()
    try:
        stream_id = pub.start()
        pacer.start(float(series.times_s[start_frame]))
        for k in range(start_frame, n):
            t = float(series.times_s[k])
            if not pacer.wait_until(t):
                break
            max_lag = max(max_lag, pacer.lag_s(t))
            pub.send_frame(frames[k], angle_deg=float(angles[k]), t_s=t,
                           exposure_s=0.0 if exposure is None else float(exposure[k]), **_frame_fields(series, k))
            sent += 1
        stopped = sent < n - start_frame
        pub.end("stopped" if stopped else "complete", **({"timeout_s": 5.0} if stopped else {}))
    except BaseException as exc:
        pub.abort(exc)
        raise
    finally:
        if owns:
            pub.close()
    wall = clock() - began
    logger.info("replayed %d frames of %s in %.1f s", sent, series.source, wall)
    return ReplayStats(stream_id, sent, wall, stopped, max_lag)


def _as_range(value: Any) -> tuple[float, float] | None:
    """``(lo, hi)`` if ``value`` is a pair of numbers with lo < hi, else None."""
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) and value[0] < value[1]):
        return float(value[0]), float(value[1])
    return None


def replay(
    path: str | os.PathLike,
    sink: Sink | str | Sequence[Sink | str] | FramePublisher,
    *,
    speed: float | str = 1.0,
    start_frame: int = 0,
    tilt_axis_angle_deg: float | None = None,
    stop_event: threading.Event | None = None,
    send_timeout_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayStats:
    """Stream the tilt series in ``path`` to ``sink`` as if it were being acquired.

    Parameters
    ----------
    path : any file (or TIFF folder) :func:`~tiltstream.stream.read_series` reads.
    sink : a sink, endpoint string(s) (lossless PUSH), a list of them, or a FramePublisher.
    speed : factor of real time (``1``, ``5``, ...), or ``"max"`` (also 0 or inf): no pacing.
        Files without times (``time_source == "frame_index"``) play one frame per second at speed 1.
    start_frame : first frame to send (its time is the replay's time zero; ``t_s`` stay as in the file).
    tilt_axis_angle_deg : in-plane tilt-axis angle of the stored frames, overriding the file's.
    stop_event : set it to stop early (``end/1`` reason ``"stopped"``).
    send_timeout_s : longest wait for a lossless sink to take one message, s (None: no limit).
    clock : monotonic clock in seconds of the pacing and of the stats (tests pass a fake).

    Returns
    -------
    ReplayStats
    """
    series = read_series(Path(path), tilt_axis_angle_deg=tilt_axis_angle_deg)
    return replay_series(series, sink, speed=speed, start_frame=start_frame, stop_event=stop_event,
                         send_timeout_s=send_timeout_s, clock=clock)
