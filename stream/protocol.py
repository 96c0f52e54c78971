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

Receiver bookkeeping lives in :mod:`tiltstream.stream.tracking` and is re-exported here:
:class:`SeqTracker` (gaps, duplicates, series changes) and :class:`RejectCounter` (counted,
rate-limited logging of rejects); :func:`try_unpack` ties :func:`unpack` to a counter.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Union

import msgpack
import numpy as np

from tiltstream.stream.messages import (
    _ARRAYS,
    _FIELD_KINDS,
    ALLOWED_DTYPES,
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
    _fail,
    _show,
)
from tiltstream.stream.tracking import SEQ_REASONS, RejectCounter, SeqResult, SeqStatus, SeqTracker
from tiltstream.stream.validation import check_finite_data, validate_header

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
        raise _fail(
            "garbage", f"part {index}: expected a bytes-like frame, got {_show(part)}"
        ) from None
    if not view.c_contiguous:
        raise _fail("garbage", f"part {index}: buffer is not contiguous")
    if view.ndim != 1 or view.format != "B":
        try:
            view = view.cast("B")
        except (TypeError, ValueError) as exc:
            raise _fail("garbage", f"part {index}: cannot view as bytes ({exc})") from None
    return view


def _decode_header(part: Any, limits: Limits) -> dict[str, Any]:
    raw = _as_buffer(part, 0)
    if len(raw) > limits.max_header_bytes:
        raise _fail("too_large", f"header: {len(raw)} bytes, limit {limits.max_header_bytes}")
    if len(raw) == 0:
        raise _fail("garbage", "header: empty part")
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
        raise _fail("garbage", f"header: not valid msgpack ({type(exc).__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise _fail("not_a_map", f"header: expected a msgpack map, got {_show(header)}")
    for key in header:
        if not isinstance(key, str):
            raise _fail("bad_field_type", f"header: expected str keys, got {_show(key)}")
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
        raise _fail("garbage", f"message: expected a list of parts, got {_show(frames)}")
    if not frames:
        raise _fail("missing_part", "message: no parts, expected a header")
    header = _decode_header(frames[0], limits)
    cls, kwargs, specs = validate_header(header, limits)
    expected = 1 + len(specs)
    if len(frames) > expected:
        raise _fail("extra_parts", f"{cls.NAME}: expected {expected} parts, got {len(frames)}")
    if len(frames) < expected:
        raise _fail("missing_part", f"{cls.NAME}: expected {expected} parts, got {len(frames)}")
    for index, (field_name, shape, dtype) in enumerate(specs, start=1):
        buffer = _as_buffer(frames[index], index)
        nbytes = math.prod(shape) * dtype.itemsize
        if len(buffer) != nbytes:
            raise _fail(
                "size_mismatch",
                f"{field_name}: shape {list(shape)} {dtype.str} needs {nbytes} bytes, "
                f"got {len(buffer)}",
            )
        array = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        array.flags.writeable = False
        check_finite_data(field_name, array, limits)
        kwargs[field_name] = array
    return cls(**kwargs)


def _wire_array(name: str, value: Any, ndim: int) -> np.ndarray:
    """A C-contiguous little-endian array in an allowed dtype (copied only when needed)."""
    if not isinstance(value, np.ndarray):
        raise _fail("bad_field_type", f"{name}: expected a numpy array, got {_show(value)}")
    dtype = value.dtype
    if dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype not in ALLOWED_DTYPES:
        allowed = ", ".join(d.name for d in ALLOWED_DTYPES)
        raise _fail("bad_dtype", f"{name}: expected one of {allowed}, got {value.dtype}")
    if value.ndim != ndim or 0 in value.shape:
        raise _fail("bad_shape", f"{name}: expected {ndim} non-empty axes, got {value.shape}")
    return np.ascontiguousarray(value, dtype=dtype)


def _msgpack_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray) and value.ndim <= 1:
        return value.tolist()
    raise TypeError(f"cannot serialise {type(value).__name__}")


def pack(
    msg: Message,
    *,
    limits: Limits = DEFAULT_LIMITS,
    zero_copy_min_bytes: int = ZERO_COPY_MIN_BYTES,
    check_data: bool = False,
) -> list[bytes | memoryview]:
    """Encode a message as multipart frames ``[header, *buffers]``.

    The header is validated as :func:`unpack` would. Pixel data is scanned for NaN/Inf only with
    ``check_data=True``: every receiver checks it anyway (under its ``limits``), and a second full
    pass over each frame on the sending side would double the cost of large frames.

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
    name = getattr(msg, "NAME", None)
    if name not in _FIELD_KINDS or not isinstance(msg, MESSAGE_TYPES[name][msg.VERSION]):
        raise TypeError(f"pack: expected a tiltstream message, got {type(msg).__name__}")
    header: dict[str, Any] = {"type": msg.type_string}
    for field_name in _FIELD_KINDS[name]:
        value = getattr(msg, field_name)
        if value is not None:
            header[field_name] = value
    arrays = []
    for field_name, key, ndim, _ in _ARRAYS[name]:
        array = _wire_array(field_name, getattr(msg, field_name), ndim)
        header[key] = list(array.shape)
        arrays.append((field_name, array))
    if arrays:
        dtypes = {array.dtype.str for _, array in arrays}
        if len(dtypes) != 1:
            raise _fail(
                "bad_dtype", f"{name}: expected one dtype for all arrays, got {sorted(dtypes)}"
            )
        header["dtype"] = dtypes.pop()
    try:
        raw = msgpack.packb(header, use_bin_type=True, default=_msgpack_default)
    except (TypeError, ValueError, OverflowError) as exc:
        raise _fail("bad_field_type", f"{name}: header not serialisable ({exc})") from None
    validate_header(_decode_header(raw, limits), limits)
    parts: list[bytes | memoryview] = [raw]
    for field_name, array in arrays:
        if check_data:
            check_finite_data(field_name, array, limits)
        if array.nbytes >= zero_copy_min_bytes:
            parts.append(memoryview(array.reshape(-1).view(np.uint8)))
        else:
            parts.append(array.tobytes())
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
