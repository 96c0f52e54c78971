"""Publish a tilt series from a microscope script: ``start/1``, one ``frame/1`` per frame, ``end/1``.

A microscope's own Python scripting environment calls this while it acquires::

    from tiltstream.acquire import FramePublisher

    with FramePublisher("tcp://127.0.0.1:5555", pixel_nm=0.25, scheme="golden",
                        tilt_range_deg=(-70, 70)) as pub:
        pub.start(sample="Au nanorods", holder="heating chip", operator="xy")
        for angle in golden_angles:                      # your scheme
            stage.tilt_to(angle)                          # your microscope API
            image = camera.acquire(exposure_s=0.1)        # 2-D array (Y, U)
            pub.send_frame(image, angle_deg=angle, exposure_s=0.1,
                           temperature_C=heater.read_C())
        pub.end()                                         # or leave the ``with`` block

A string endpoint binds the transport's lossless PUSH socket(s) (``"tcp://a:1,tcp://b:2"``: one
per consumer); any object with ``send(msg) -> bool`` works as well (see
:mod:`tiltstream.acquire.sinks`), and a list sends to all of them. ``pub=`` adds a lossy viewer
socket. Frames must follow the tiltstream convention (rows along the tilt axis).

Validation happens before anything is sent, with errors that say what was expected: a 2-D,
non-empty, finite frame; the same shape as the first frame (or ``frame_shape``); a dtype that
converts exactly to the series dtype (``dtype``, else the first frame's); finite angle and time;
exposure and dose ≥ 0. ``start/1`` goes out at :meth:`FramePublisher.start` when shape and dtype
are known, otherwise just before the first frame. Each :meth:`~FramePublisher.start` begins a new
series with a fresh ``stream_id`` and ``seq`` from 0.

Lossless sinks that refuse a message (queue full: the consumer is slower than the microscope)
are offered it again until they take it: ``send_frame`` then blocks, which is backpressure, never a
silent drop. ``send_timeout_s`` bounds that wait (:class:`~.sinks.DeliveryTimeout`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tiltstream.acquire.sinks import Delivery, Sink, close_sink, lossy, open_pub, open_push
from tiltstream.stream.messages import DEFAULT_UNITS, EndMsg, FrameMsg, StartMsg
from tiltstream.stream.protocol import pack
from tiltstream.stream.schema import ALLOWED_DTYPES
from tiltstream.stream.validation import FrameRejected, check_field, check_frame

__all__ = ["FramePublisher", "FRAME_EXTRA_FIELDS", "publisher_for", "wire_dtype", "exact_cast"]

logger = logging.getLogger(__name__)

#: Optional ``frame/1`` fields ``send_frame(**extra)`` accepts besides dose and temperature.
FRAME_EXTRA_FIELDS = ("pixel_nm", "tilt_range_deg", "stage_xyz", "focus_index")
_END_TIMEOUT_ON_ERROR_S = 5.0
_REASON_CHARS = 200


def wire_dtype(dtype: Any) -> np.dtype:
    """The protocol dtype that holds ``dtype`` exactly (itself when allowed; e.g. float16 → float32).

    Raises ValueError when no allowed dtype holds every value (int64, uint64, complex, ...).
    """
    dt = np.dtype(dtype)
    if dt.byteorder == ">":
        dt = dt.newbyteorder("<")
    if dt in ALLOWED_DTYPES:
        return next(a for a in ALLOWED_DTYPES if a == dt)
    for allowed in ALLOWED_DTYPES:
        if exact_cast(dt, allowed):
            return allowed
    names = ", ".join(a.name for a in ALLOWED_DTYPES)
    raise ValueError(f"frame dtype: expected one that converts exactly to {names}, got {dt}")


def exact_cast(src: Any, dst: Any) -> bool:
    """True when every value of dtype ``src`` is held exactly by ``dst`` (numpy's "safe" casting,
    minus integers too wide for the float's mantissa, e.g. int64 → float64)."""
    src, dst = np.dtype(src), np.dtype(dst)
    if not np.can_cast(src, dst, casting="safe"):
        return False
    if src.kind in "iu" and dst.kind == "f":
        return src.itemsize * 8 - (src.kind == "i") <= np.finfo(dst).nmant + 1
    return True


def _number(value: Any) -> Any:
    """numpy scalars and other real numbers as float (the wire's type); anything else as it is."""
    if isinstance(value, (bool, np.bool_)):
        return value
    try:
        return float(value) if isinstance(value, (int, float, np.integer, np.floating)) else value
    except (TypeError, ValueError):
        return value


def _field(seq: int, name: str, value: Any) -> Any:
    """A frame/1 field checked by the protocol's own rules; errors name the frame."""
    try:
        return check_field("frame", name, value)
    except FrameRejected as exc:
        raise FrameRejected(exc.reason, f"frame {seq}: {exc.detail}") from None


class FramePublisher:
    """Sends one tilt series at a time (``start/1``, ``frame/1`` …, ``end/1``) to one or more sinks.

    Parameters
    ----------
    sink_or_endpoint : a sink (``send(msg) -> bool``), an endpoint string (comma-separated for
        several consumers; binds lossless PUSH sockets that :meth:`close` closes), or a list of
        either.
    frame_shape : (Y, U) of every frame; None takes the first frame's.
    dtype : frame dtype on the wire; None takes the first frame's (see :func:`wire_dtype`). Frames
        of another dtype are converted when that is exact, refused otherwise.
    pixel_nm : detector pixel size in the sample plane, nm.
    scheme : tilt scheme name for ``start/1`` (``"golden"``, ``"linear"``, ...).
    tilt_range_deg : (lo, hi) tilt range, degrees, or None.
    exposure_s : default exposure per frame, seconds, for ``send_frame`` calls that give none.
    experiment : free-form JSON-like metadata sent in every ``start/1`` (``start(**metadata)`` adds).
    pub : a lossy viewer sink or PUB endpoint that also gets every message.
    send_timeout_s : longest wait for a lossless sink to take one message, s (None: no limit).
    stop_event : a wait for a full sink gives up when this is set (the message is not delivered).
    clock : monotonic clock (s) for ``t_s=None``.
    units : units table for ``start/1`` (default :data:`~tiltstream.stream.messages.DEFAULT_UNITS`).

    Attributes
    ----------
    stream_id : id of the current (or last) series; None before the first :meth:`start`.
    n_frames : frames sent in the current (or last) series.
    delivery : the :class:`~tiltstream.acquire.sinks.Delivery` doing the sending (its counters).
    """

    def __init__(
        self,
        sink_or_endpoint: Sink | str | Sequence[Sink | str],
        *,
        frame_shape: tuple[int, int] | None = None,
        dtype: Any = None,
        pixel_nm: float | None = None,
        scheme: str = "golden",
        tilt_range_deg: tuple[float, float] | None = (-70.0, 70.0),
        exposure_s: float | None = None,
        experiment: Mapping[str, Any] | None = None,
        pub: Sink | str | None = None,
        send_timeout_s: float | None = None,
        stop_event: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        units: Mapping[str, str] | None = None,
    ) -> None:
        self._frame_shape = self._check_shape(frame_shape) if frame_shape is not None else None
        self._dtype = wire_dtype(dtype) if dtype is not None else None
        self.pixel_nm = None if pixel_nm is None else check_field("start", "pixel_nm", _number(pixel_nm))
        self.scheme = str(scheme)
        self.tilt_range_deg = self._check_range(tilt_range_deg)
        self.exposure_s = None if exposure_s is None else check_field("frame", "exposure_s", _number(exposure_s))
        self.experiment = dict(experiment or {})
        self.units = dict(DEFAULT_UNITS if units is None else units)
        self.clock = clock
        self._owned: list[Any] = []
        sinks: list[Any] = []
        try:
            items = sink_or_endpoint if isinstance(sink_or_endpoint, (list, tuple)) else [sink_or_endpoint]
            endpoints = [i for i in items if isinstance(i, str)]
            if endpoints:
                sinks.append(self._own(open_push(endpoints)))
            sinks.extend(i for i in items if not isinstance(i, str))
            if pub is not None:
                sinks.append(self._own(open_pub(pub)) if isinstance(pub, str) else lossy(pub))
            self.delivery = Delivery(sinks, timeout_s=send_timeout_s, stop_event=stop_event)
        except BaseException:
            self.close()
            raise
        self._lock = threading.RLock()
        self.stream_id: str | None = None
        self.n_frames = 0
        self._open = False
        self._start_sent = False
        self._metadata: dict[str, Any] = {}
        self._t0 = 0.0

    # -- helpers ---------------------------------------------------------------------------------
    def _own(self, sink: Any) -> Any:
        self._owned.append(sink)
        return sink

    @staticmethod
    def _check_shape(shape: Any) -> tuple[int, int]:
        try:
            y, u = (int(v) for v in shape)
        except (TypeError, ValueError):
            raise ValueError(f"frame_shape: expected (Y, U), got {shape!r}") from None
        if y < 1 or u < 1:
            raise ValueError(f"frame_shape: expected positive sizes (Y, U), got {shape!r}")
        return y, u

    @staticmethod
    def _check_range(value: Any) -> tuple[float, float] | None:
        if value is None:
            return None
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, (list, tuple)):
            value = [_number(v) for v in value]
        return check_field("start", "tilt_range_deg", value)

    @property
    def is_open(self) -> bool:
        """True between :meth:`start` and :meth:`end`."""
        return self._open

    def _start_msg(self, shape: tuple[int, int], dtype: np.dtype) -> StartMsg:
        assert self.stream_id is not None
        return StartMsg(
            stream_id=self.stream_id, frame_shape=shape, dtype=dtype.str, scheme=self.scheme,
            pixel_nm=self.pixel_nm, tilt_range_deg=self.tilt_range_deg, units=dict(self.units),
            experiment=self._metadata,
        )

    def _deliver(self, msg: Any, **kw: Any) -> bool:
        ok = self.delivery.send(msg, **kw)
        if not ok:
            logger.warning("series %s: %s not delivered to every sink (stopped)", self.stream_id, msg.type_string)
        return ok

    # -- the series ------------------------------------------------------------------------------
    def start(self, **metadata: Any) -> str:
        """Begin a new series; ``metadata`` (JSON-like) joins ``experiment`` in its ``start/1``.

        Returns the new ``stream_id`` (``uuid4().hex``). ``t_s=None`` frames count from now.
        Raises RuntimeError if a series is open, ProtocolError for metadata the wire cannot carry.
        """
        with self._lock:
            if self._open:
                raise RuntimeError(f"series {self.stream_id} is still open: call end() before start()")
            self.stream_id = uuid.uuid4().hex
            self._metadata = {**self.experiment, **metadata}
            self.n_frames = 0
            self._start_sent = False
            # Validate now (header only), even when start/1 must wait for the first frame.
            pack(self._start_msg(self._frame_shape or (1, 1), self._dtype or np.dtype("<f4")))
            self._open = True
            self._t0 = self.clock()
            logger.info("series %s started (%s, pixel %s nm)", self.stream_id, self.scheme, self.pixel_nm)
            if self._frame_shape is not None and self._dtype is not None:
                self._start_sent = True
                self._deliver(self._start_msg(self._frame_shape, self._dtype))
            return self.stream_id

    def send_frame(
        self,
        array: Any,
        *,
        angle_deg: float,
        t_s: float | None = None,
        exposure_s: float | None = None,
        dose_e_per_A2: float | None = None,
        temperature_C: float | None = None,
        **extra: Any,
    ) -> int:
        """Validate and send one frame; returns its ``seq`` (0, 1, 2, ... within the series).

        Parameters
        ----------
        array : (Y, U) frame, rows along the tilt axis.
        angle_deg : tilt angle, degrees.
        t_s : mid-exposure time, seconds since :meth:`start`; None uses the time of this call.
        exposure_s : exposure, s (default: the publisher's ``exposure_s``).
        dose_e_per_A2 : electron dose, e⁻/Å² (≥ 0).
        temperature_C : sample temperature, °C.
        extra : other ``frame/1`` fields: ``pixel_nm``, ``tilt_range_deg``, ``stage_xyz`` (nm),
            ``focus_index``.
        """
        now = self.clock()
        unknown = sorted(set(extra) - set(FRAME_EXTRA_FIELDS))
        if unknown:
            raise TypeError(
                f"send_frame: unexpected field(s) {unknown}; frame/1 carries only dose_e_per_A2, "
                f"temperature_C and {', '.join(FRAME_EXTRA_FIELDS)} (put the rest in start(**metadata))"
            )
        with self._lock:
            if not self._open:
                raise RuntimeError("send_frame: no open series, call start() first")
            seq = self.n_frames
            angle = _field(seq, "angle_deg", _number(angle_deg))
            t = (now - self._t0) if t_s is None else _field(seq, "t_s", _number(t_s))
            exposure = self.exposure_s if exposure_s is None else exposure_s
            if exposure is None:
                raise ValueError(f"frame {seq}: exposure_s: expected seconds >= 0, got None "
                                 "(pass exposure_s= here or to FramePublisher)")
            exposure = _field(seq, "exposure_s", _number(exposure))
            dose = None if dose_e_per_A2 is None else _field(seq, "dose_e_per_A2", _number(dose_e_per_A2))
            temp = None if temperature_C is None else _field(seq, "temperature_C", _number(temperature_C))
            data = self._check_frame(array, seq, angle, t, exposure)
            msg = FrameMsg(seq=seq, stream_id=self.stream_id, angle_deg=angle, t_s=t, exposure_s=exposure,
                           data=data, dose_e_per_A2=dose, temperature_C=temp, **extra)
            if not self._start_sent:
                assert self._frame_shape is not None and self._dtype is not None
                self._start_sent = True
                self._deliver(self._start_msg(self._frame_shape, self._dtype))
            self._deliver(msg)
            self.n_frames += 1
            return seq

    def _check_frame(self, array: Any, seq: int, angle: float, t: float, exposure: float) -> np.ndarray:
        try:  # the rules every receiver applies, then the publisher's own dtype conversion
            data, *_ = check_frame(array, angle_deg=angle, t_s=t, exposure_s=exposure,
                                   expected_shape=self._frame_shape)
        except FrameRejected as exc:
            raise FrameRejected(exc.reason, f"frame {seq}: {exc.detail}") from None
        dtype = self._dtype if self._dtype is not None else wire_dtype(data.dtype)
        if not exact_cast(data.dtype, dtype):
            raise ValueError(f"frame {seq}: dtype {data.dtype} does not convert exactly to the series dtype {dtype}")
        self._frame_shape = self._frame_shape or (int(data.shape[0]), int(data.shape[1]))
        self._dtype = dtype
        return np.ascontiguousarray(data, dtype=dtype)

    def end(self, reason: str = "complete", *, timeout_s: float | None = None) -> int:
        """Close the series with ``end/1`` carrying the frame count and ``reason``; returns the count.

        ``timeout_s`` bounds the wait for the sinks (default: the publisher's ``send_timeout_s``).
        """
        with self._lock:
            if not self._open:
                raise RuntimeError("end: no open series, call start() first")
            self._open = False
            wait = {} if timeout_s is None else {"timeout_s": timeout_s}
            if not self._start_sent and self._frame_shape is not None:
                self._start_sent = True
                self._deliver(self._start_msg(self._frame_shape, self._dtype or np.dtype("<f4")), **wait)
            msg = EndMsg(stream_id=self.stream_id, n_frames=self.n_frames, reason=str(reason)[:_REASON_CHARS])
            self._deliver(msg, **wait)
            logger.info("series %s ended after %d frames (%s)", self.stream_id, self.n_frames, reason)
            return self.n_frames

    def abort(self, exc: BaseException) -> None:
        """End an open series because of ``exc``: reason ``"aborted"`` for Ctrl-C, else ``"error: ..."``.

        A failure to send that ``end/1`` is logged, not raised: the original error matters more.
        """
        if not self._open:
            return
        reason = "aborted" if isinstance(exc, KeyboardInterrupt) else f"error: {type(exc).__name__}: {exc}"
        try:
            self.end(reason, timeout_s=_END_TIMEOUT_ON_ERROR_S)
        except Exception:
            logger.exception("series %s: could not send end/1", self.stream_id)

    def close(self) -> None:
        """Close the sockets this publisher opened from endpoints (given sinks are left open)."""
        owned, self._owned = self._owned, []
        for sink in owned:
            close_sink(sink)

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        try:
            if exc is not None:
                self.abort(exc)
            elif self._open:
                self.end("complete")
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "open" if self._open else "idle"
        return f"FramePublisher(stream_id={self.stream_id!r}, {state}, frames={self.n_frames})"


def publisher_for(
    sink: Sink | str | Sequence[Sink | str] | FramePublisher, experiment: Mapping[str, Any], **options: Any
) -> tuple[FramePublisher, bool]:
    """``(publisher, owned)`` for a frame source: ``sink`` itself if it is a FramePublisher (``experiment``
    joins its metadata, ``options`` are not used), else a new one made with ``options``; ``owned`` is
    True for a new one, which the source closes."""
    if isinstance(sink, FramePublisher):
        sink.experiment.update(experiment)
        return sink, False
    return FramePublisher(sink, experiment=experiment, **options), True
