"""Wire protocol codec: messages <-> ZeroMQ multipart frames. Pure, no sockets.

Framing
-------
Every message is a ZeroMQ multipart message whose first part is a msgpack map (str keys) with a
``type`` of the form ``"<name>/<version>"``; array messages add raw C-contiguous little-endian
buffers:

============  ================================  ==========================================
type          parts                             array header keys
============  ================================  ==========================================
start/1       [header]                          (none; ``frame_shape``/``dtype`` are fields)
frame/1       [header, data]                    ``shape`` [Y, U], ``dtype``
end/1         [header]
volume/1      [header, data]                    ``shape`` [Z, Y, X], ``dtype``
slices/1      [header, xy, xz, yz]              ``xy_shape``, ``xz_shape``, ``yz_shape``, ``dtype``
metrics/1     [header]
============  ================================  ==========================================

Optional fields whose value is None are left out of the header; absent and nil mean the same.
Allowed dtypes: uint8, uint16, int16, int32, float32, float64, always little-endian; the header
spells them as numpy ``dtype.str`` (``"|u1"``, ``"<u2"``, ``"<i2"``, ``"<i4"``, ``"<f4"``,
``"<f8"``), and the plain names (``"uint16"``) and ``"<u1"`` are accepted too.

:func:`unpack` checks everything and raises :class:`ProtocolError` (reason codes in
:data:`REASONS`) and nothing else for any input. Arrays it returns are read-only numpy views onto
the received buffers (no copy): they keep the buffer (e.g. a ``zmq.Frame``) alive; copy them to
modify. :func:`pack` validates with the same rules, so whatever it emits is accepted by
:func:`unpack` under the same :class:`Limits`. Large arrays are passed zero-copy, so the caller must
not modify them until ZeroMQ has sent them (``send_multipart(parts, copy=False)``).

Sequence numbers: within a series (``stream_id``) the frames count 0, 1, 2, ... and each published
type (``volume``, ``slices``, ``metrics``) counts its own 0, 1, 2, ... (:func:`sequence_key`), so
a gap in one sequence is a lost message of that type and nothing else.

Bookkeeping lives in :mod:`tiltstream.stream.tracking` and is re-exported here: :class:`SeqTracker`
(gaps, duplicates, series changes), :class:`SeqNumbers` (a producer's counters) and
:class:`RejectCounter` (counted, rate-limited logging of rejects); :func:`try_unpack` ties
:func:`unpack` to a counter.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Union

import msgpack
import numpy as np

from tiltstream.stream.messages import (
    DEFAULT_LIMITS,
    DEFAULT_UNITS,
    MESSAGE_TYPES,
    REASONS,
    EndMsg,
    FrameMsg,
    Limits,
    Message,
    MetricsMsg,
    ProtocolError,
    SlicesMsg,
    StartMsg,
    VolumeMsg,
    _frame_from_fields,
)
from tiltstream.stream.schema import _ARRAYS, _FIELD_KINDS, _REQUIRED, ALLOWED_DTYPES, _show
from tiltstream.stream.tracking import (
    SEQ_REASONS,
    RejectCounter,
    SeqNumbers,
    SeqResult,
    SeqStatus,
    SeqTracker,
    sequence_key,
)
from tiltstream.stream.validation import (
    check_finite_data,
    validate_frame_fast,
    validate_header,
)

if TYPE_CHECKING:
    import zmq

__all__ = [
    "REASONS",
    "DEFAULT_UNITS",
    "DEFAULT_LIMITS",
    "ZERO_COPY_MIN_BYTES",
    "ALLOWED_DTYPES",
    "ProtocolError",
    "Limits",
    "Message",
    "StartMsg",
    "FrameMsg",
    "EndMsg",
    "VolumeMsg",
    "SlicesMsg",
    "MetricsMsg",
    "pack",
    "unpack",
    "try_unpack",
    "SeqTracker",
    "SeqNumbers",
    "sequence_key",
    "SeqResult",
    "SeqStatus",
    "RejectCounter",
    "SEQ_REASONS",
]

#: Arrays of at least this many bytes are packed as a zero-copy memoryview; smaller ones as bytes.
ZERO_COPY_MIN_BYTES = 64 * 1024

Part = Union[bytes, bytearray, memoryview, "zmq.Frame"]

# ---------------------------------------------------------------------------------------------
# Header decoding and validation.


def _as_buffer(part: Any, index: int) -> memoryview:
    """A flat byte view of one message part; ``garbage`` if it is not a contiguous buffer."""
    try:
        view = memoryview(part)
    except TypeError:
        raise ProtocolError(
            "garbage", f"part {index}: expected a bytes-like frame, got {_show(part)}"
        ) from None
    if not view.c_contiguous:
        raise ProtocolError("garbage", f"part {index}: buffer is not contiguous")
    if view.ndim != 1 or view.format != "B":
        try:
            view = view.cast("B")
        except (TypeError, ValueError) as exc:
            raise ProtocolError("garbage", f"part {index}: cannot view as bytes ({exc})") from None
    return view


def _decode_header(part: Any, limits: Limits) -> dict[str, Any]:
    raw = part if type(part) is bytes else _as_buffer(part, 0)
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError("too_large", f"header: {len(raw)} bytes, limit {limits.max_header_bytes}")
    if len(raw) == 0:
        raise ProtocolError("garbage", "header: empty part")
    n = limits.max_header_bytes
    try:
        header = msgpack.unpackb(
            raw,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=n,
            max_bin_len=n,
            max_array_len=n,
            max_map_len=n,
            max_ext_len=n,
        )
    except Exception as exc:  # msgpack raises many types (ValueError, StackError, ...)
        raise ProtocolError("garbage", f"header: not valid msgpack ({type(exc).__name__}: {exc})") from None
    if type(header) is not dict:
        raise ProtocolError("not_a_map", f"header: expected a msgpack map, got {_show(header)}")
    for key in header:
        if type(key) is not str:
            raise ProtocolError("bad_field_type", f"header: expected str keys, got {_show(key)}")
    return header


# ---------------------------------------------------------------------------------------------
# Public codec.


def unpack(frames: list[Part] | tuple[Part, ...], *, limits: Limits = DEFAULT_LIMITS) -> Message:
    """Decode and validate one multipart message.

    Parameters
    ----------
    frames : the parts as received (``bytes``, ``zmq.Frame``, ``memoryview``, ``bytearray``).
    limits : size bounds and strictness.

    Returns
    -------
    The message. Its arrays are read-only views onto the received buffers (no copy).

    Raises
    ------
    ProtocolError
        for any malformed input, with a reason code from :data:`REASONS`; never anything else.
    """
    if not isinstance(frames, (list, tuple)):
        raise ProtocolError("garbage", f"message: expected a list of parts, got {_show(frames)}")
    if not frames:
        raise ProtocolError("missing_part", "message: no parts, expected a header")
    header = _decode_header(frames[0], limits)
    if header.get("type") == "frame/1" and len(frames) == 2:
        msg = _unpack_frame_fast(header, frames[1], limits)
        if msg is not None:
            return msg
    cls, kwargs, specs = validate_header(header, limits)
    expected = 1 + len(specs)
    if len(frames) > expected:
        raise ProtocolError("extra_parts", f"{cls.NAME}: expected {expected} parts, got {len(frames)}")
    if len(frames) < expected:
        raise ProtocolError("missing_part", f"{cls.NAME}: expected {expected} parts, got {len(frames)}")
    for index, (field_name, shape, dtype) in enumerate(specs, start=1):
        buffer = _as_buffer(frames[index], index)
        nbytes = math.prod(shape) * dtype.itemsize
        if len(buffer) != nbytes:
            raise ProtocolError(
                "size_mismatch",
                f"{field_name}: shape {list(shape)} {dtype.str} needs {nbytes} bytes, "
                f"got {len(buffer)}",
            )
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        array.flags.writeable = False
        check_finite_data(field_name, array, limits)
        kwargs[field_name] = array
    return cls(**kwargs)


def _unpack_frame_fast(header: dict[str, Any], part: Any, limits: Limits) -> FrameMsg | None:
    """The common ``frame/1`` (see :func:`validate_frame_fast`); None: take the general path.

    Whatever it returns, the general path would return too; whatever it leaves, the general path
    accepts or rejects with the precise reason.
    """
    fast = validate_frame_fast(header, limits)
    if fast is None:
        return None
    fields, shape, dtype = fast
    buffer = _as_buffer(part, 1)
    if len(buffer) != shape[0] * shape[1] * dtype.itemsize:
        return None
    array = np.ndarray(shape, dtype, buffer)
    array.flags.writeable = False
    check_finite_data("data", array, limits)
    fields["data"] = array
    return _frame_from_fields(fields)


def _wire_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """A C-contiguous little-endian array in an allowed dtype (copied only when needed)."""
    if not isinstance(value, np.ndarray):
        raise ProtocolError("bad_field_type", f"{name}: expected a numpy array, got {_show(value)}")
    dtype = value.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype not in ALLOWED_DTYPES:
        allowed = ", ".join(d.name for d in ALLOWED_DTYPES)
        raise ProtocolError("bad_dtype", f"{name}: expected one of {allowed}, got {value.dtype}")
    if value.ndim != ndim or 0 in value.shape:
        raise ProtocolError("bad_shape", f"{name}: expected {ndim} non-empty axes, got {value.shape}")
    return np.ascontiguousarray(value, dtype=dtype)


def _msgpack_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _to_wire(value: Any) -> Any:
    """``value`` as it comes out of a msgpack round trip: tuples as lists, numpy scalars and 1-D
    arrays as Python values; whatever msgpack cannot encode is left for validation to reject."""
    kind = type(value)
    if kind is str or kind is float or kind is int or kind is bool or value is None:
        return value
    if isinstance(value, (list, tuple)) and not isinstance(value, msgpack.ExtType):
        return [_to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_wire(v) for k, v in value.items()}
    if isinstance(value, (np.generic, np.ndarray)):
        try:
            return _to_wire(_msgpack_default(value))
        except TypeError:
            return value
    return value


def _encode(header: dict[str, Any], name: str, limits: Limits) -> bytes:
    try:
        raw = msgpack.packb(header, use_bin_type=True, default=_msgpack_default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError("bad_field_type", f"{name}: header not serialisable ({exc})") from None
    if len(raw) > limits.max_header_bytes:
        raise ProtocolError("too_large", f"header: {len(raw)} bytes, limit {limits.max_header_bytes}")
    return raw


def _array_part(array: np.ndarray, zero_copy_min_bytes: int) -> bytes | memoryview:
    """A C-contiguous array as one message part: a byte view when large, else a copy."""
    if array.nbytes >= zero_copy_min_bytes:
        return memoryview(array).cast("B")
    return array.tobytes()


#: Allowed array dtypes (either byte order spelling of little-endian) -> their header spelling.
_WIRE_DTYPES: dict[np.dtype, str] = {dt: dt.str for dt in ALLOWED_DTYPES}
#: Optional frame/1 header fields, in schema order.
_FRAME_OPTIONS = tuple(k for k in _FIELD_KINDS["frame"] if k not in _REQUIRED["frame"])


def _pack_frame_fast(
    msg: FrameMsg, limits: Limits, zero_copy_min_bytes: int, check_data: bool
) -> list[bytes | memoryview] | None:
    """:func:`pack` of the common frame (C-contiguous array, plain Python field values); None:
    take the general path. Validates the header before encoding it (:func:`validate_frame_fast`)."""
    data = msg.data
    if type(data) is not np.ndarray or data.ndim != 2 or not data.flags.c_contiguous:
        return None
    wire_dtype = _WIRE_DTYPES.get(data.dtype)
    if wire_dtype is None:
        return None
    header: dict[str, Any] = {
        "type": "frame/1",
        "seq": msg.seq,
        "stream_id": msg.stream_id,
        "angle_deg": msg.angle_deg,
        "t_s": msg.t_s,
        "exposure_s": msg.exposure_s,
    }
    for key in _FRAME_OPTIONS:
        value = getattr(msg, key)
        if value is not None:
            header[key] = value
    header["shape"] = list(data.shape)
    header["dtype"] = wire_dtype
    if validate_frame_fast(header, limits) is None:
        return None
    raw = _encode(header, "frame", limits)
    if check_data:
        check_finite_data("data", data, limits)
    return [raw, _array_part(data, zero_copy_min_bytes)]


def pack(
    msg: Message,
    *,
    limits: Limits = DEFAULT_LIMITS,
    zero_copy_min_bytes: int = ZERO_COPY_MIN_BYTES,
    check_data: bool = False,
) -> list[bytes | memoryview]:
    """Encode a message as multipart frames ``[header, *buffers]``.

    The header is validated as :func:`unpack` would validate it after decoding (in the form a
    msgpack round trip gives it: tuples as lists, numpy scalars as Python numbers), before it is
    encoded. Pixel data is scanned for NaN/Inf only with ``check_data=True``: every receiver checks
    it anyway (under its ``limits``), and a second full pass over each frame on the sending side
    would double the cost of large frames.

    Arrays of at least ``zero_copy_min_bytes`` are passed as a memoryview: when already
    C-contiguous, little-endian and in an allowed dtype it shares their memory (send with
    ``copy=False`` and do not modify them until sent), otherwise it views a private contiguous
    copy. Smaller arrays are copied into ``bytes``.

    Raises
    ------
    TypeError
        if ``msg`` is not a message.
    ProtocolError
        if the message breaks the rules :func:`unpack` enforces under ``limits``.
    """
    if type(msg) is FrameMsg:
        parts = _pack_frame_fast(msg, limits, zero_copy_min_bytes, check_data)
        if parts is not None:
            return parts
    name = getattr(msg, "NAME", None)
    if name not in _FIELD_KINDS or not isinstance(msg, MESSAGE_TYPES[name][msg.VERSION]):
        raise TypeError(f"pack: expected a tiltstream message, got {type(msg).__name__}")
    header: dict[str, Any] = {"type": msg.type_string}
    for field_name in _FIELD_KINDS[name]:
        value = getattr(msg, field_name)
        if value is not None:
            header[field_name] = _to_wire(value)
    arrays = []
    for field_name, key, ndim, _ in _ARRAYS[name]:
        array = _wire_array(field_name, getattr(msg, field_name), ndim)
        header[key] = list(array.shape)
        arrays.append((field_name, array))
    if arrays:
        dtypes = {array.dtype.str for _, array in arrays}
        if len(dtypes) != 1:
            raise ProtocolError(
                "bad_dtype", f"{name}: expected one dtype for all arrays, got {sorted(dtypes)}"
            )
        header["dtype"] = dtypes.pop()
    validate_header(header, limits)
    parts: list[bytes | memoryview] = [_encode(header, name, limits)]
    for field_name, array in arrays:
        if check_data:
            check_finite_data(field_name, array, limits)
        parts.append(_array_part(array, zero_copy_min_bytes))
    return parts


def try_unpack(
    frames: list[Part] | tuple[Part, ...],
    counter: RejectCounter,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> Message | None:
    """:func:`unpack`, but a rejected message is recorded in ``counter`` and gives None."""
    try:
        return unpack(frames, limits=limits)
    except ProtocolError as error:
        counter.record(error)
        return None
