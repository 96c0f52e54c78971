"""Message dataclasses, limits and the error type of the tiltstream wire protocol.

This module holds the messages themselves; which header fields and array parts each type has on
the wire, and the dtypes arrays may have, are in :mod:`tiltstream.stream.schema`; the rules a valid
value follows are in :mod:`tiltstream.stream.validation`. The codec that turns messages into ZeroMQ multipart frames and
back is :mod:`tiltstream.stream.protocol`; import from there.

Conventions (see DESIGN.md): frames are (Y, U) arrays with Y along the tilt axis, volumes are
(Z, Y, X); angles are in degrees, times in seconds since stream start, lengths in nm, dose in
e⁻/Å², temperature in °C.

Messages are frozen, keyword-only dataclasses. They compare by value: array fields are equal when
shape, dtype and contents are equal (NaN equals NaN in float arrays). Sequences such as
``tilt_range_deg`` are stored as tuples. Field values are checked by :func:`~.protocol.pack` and
:func:`~.protocol.unpack`, not at construction, so a message built from bad values fails when it
is packed, with a :class:`ProtocolError` naming the field.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

__all__ = [
    "REASONS",
    "DEFAULT_UNITS",
    "ProtocolError",
    "Limits",
    "DEFAULT_LIMITS",
    "StartMsg",
    "FrameMsg",
    "EndMsg",
    "VolumeMsg",
    "SlicesMsg",
    "MetricsMsg",
    "Message",
    "MESSAGE_TYPES",
]

#: Every reason code a :class:`ProtocolError` can carry.
REASONS: frozenset[str] = frozenset(
    {
        "garbage",  # a part is not a buffer, or the header is not decodable msgpack
        "not_a_map",  # the header decodes to something other than a map
        "unknown_type",  # "type" names no known message
        "bad_version",  # known message name, unsupported or malformed version
        "missing_field",  # a required header field is absent
        "unknown_field",  # a header field the schema does not know (strict mode only)
        "bad_field_type",  # a header field or key has the wrong type
        "bad_value",  # right type, value out of range (negative seq, empty id, index outside)
        "non_finite",  # NaN or Inf in a float field or in float array data
        "bad_shape",  # shape is not a list of positive ints of the right length, or inconsistent
        "bad_dtype",  # dtype string not in the allowed set
        "size_mismatch",  # buffer length differs from prod(shape) * itemsize
        "too_large",  # header bytes or array elements above the configured limits
        "extra_parts",  # more multipart frames than the message type has
        "missing_part",  # fewer multipart frames than the message type needs
    }
)

#: Units stated by a ``start/1`` message unless the sender says otherwise.
DEFAULT_UNITS: dict[str, str] = {
    "angle": "deg",
    "time": "s",
    "length": "nm",
    "dose": "e/A^2",
    "temperature": "C",
}


class ProtocolError(ValueError):
    """A message that breaks the wire protocol.

    Attributes
    ----------
    reason : short machine-readable code, one of :data:`REASONS` (e.g. ``"size_mismatch"``).
    detail : human-readable text naming the field, what was expected and what arrived.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True, kw_only=True)
class Limits:
    """Bounds that :func:`~.protocol.unpack` enforces (and :func:`~.protocol.pack` checks).

    Attributes
    ----------
    max_frame_elements : most pixels in one frame or one slice (default 8192 × 8192).
    max_volume_elements : most voxels in one volume (default 1024³).
    max_header_bytes : largest encoded header; also bounds every msgpack string/array/map length.
    max_metrics : most entries in ``metrics/1`` ``values``.
    max_str_chars : longest ``stream_id``/``scheme``/``source``/``reason`` string.
    max_nesting : deepest nesting of lists/maps inside ``experiment`` metadata.
    check_data_finite : reject float array data containing NaN or Inf.
    strict : reject header fields the schema does not know (default: ignore them, so a newer
        sender may add optional fields without a version bump).
    max_seq_jump : largest jump ahead in ``seq`` a receiver takes as a gap at once (twice the
        lossless queues); a longer one waits for the next message to confirm it (see
        :class:`~tiltstream.stream.intake.Intake`), so a real long gap costs one message of delay.
    """

    max_frame_elements: int = 8192 * 8192
    max_volume_elements: int = 1024**3
    max_header_bytes: int = 64 * 1024
    max_metrics: int = 256
    max_str_chars: int = 256
    max_nesting: int = 16
    check_data_finite: bool = True
    strict: bool = False
    max_seq_jump: int = 64


DEFAULT_LIMITS = Limits()


def _as_tuple(value: Any) -> Any:
    """Lists, tuples and 1-D arrays become tuples of Python scalars; anything else is kept."""
    if isinstance(value, np.ndarray) and value.ndim == 1:
        return tuple(value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(v.item() if isinstance(v, np.generic) else v for v in value)
    return value


def _canonical_dtype(value: Any) -> Any:
    """A numpy dtype spelling becomes its ``dtype.str`` (``"<u2"``); anything else is kept."""
    try:
        return np.dtype(value).str
    except (TypeError, ValueError):
        return value


def _values_equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        both = isinstance(a, np.ndarray) and isinstance(b, np.ndarray)
        if not both or a.shape != b.shape or a.dtype != b.dtype:
            return False
        return bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


def _short_repr(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array(shape={value.shape}, dtype={value.dtype})"
    return repr(value)


class _Base:
    """Value equality (arrays by content) and a compact repr for all messages."""

    NAME: ClassVar[str]
    VERSION: ClassVar[int]

    @property
    def type_string(self) -> str:
        """The wire ``type`` of this message, e.g. ``"frame/1"``."""
        return f"{self.NAME}/{self.VERSION}"

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(
            _values_equal(getattr(self, f.name), getattr(other, f.name))
            for f in fields(self)  # type: ignore[arg-type]
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{f.name}={_short_repr(getattr(self, f.name))}"
            for f in fields(self)  # type: ignore[arg-type]
        )
        return f"{type(self).__name__}({parts})"


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class StartMsg(_Base):
    """``start/1``: a new tilt series begins. Header only.

    Attributes
    ----------
    stream_id : series id (e.g. ``uuid.uuid4().hex``); consumers drop data of other series.
    frame_shape : (Y, U) of every frame in this series.
    dtype : numpy dtype string of the frames, stored canonically (``"<u2"``, ``"|u1"``, ...).
    scheme : tilt scheme, e.g. ``"golden_ratio"``.
    pixel_nm : detector pixel size in the sample plane, nm; None when unknown.
    tilt_range_deg : (lo, hi) tilt range in degrees; None when unknown.
    units : quantity -> unit, see :data:`DEFAULT_UNITS`.
    experiment : free-form JSON-like metadata (str keys; None/bool/int/float/str/list/dict).
        Tuples inside come back as lists.
    """

    NAME: ClassVar[str] = "start"
    VERSION: ClassVar[int] = 1

    stream_id: str
    frame_shape: tuple[int, int]
    dtype: str
    scheme: str
    pixel_nm: float | None = None
    tilt_range_deg: tuple[float, float] | None = None
    units: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_UNITS))
    experiment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "frame_shape", _as_tuple(self.frame_shape))
        object.__setattr__(self, "dtype", _canonical_dtype(self.dtype))
        object.__setattr__(self, "tilt_range_deg", _as_tuple(self.tilt_range_deg))


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class FrameMsg(_Base):
    """``frame/1``: one projection. Parts ``[header, buffer]``.

    Attributes
    ----------
    seq : frame number in the series, 0, 1, 2, ... (gaps mean lost frames).
    stream_id : series id, see :class:`StartMsg`.
    angle_deg : tilt angle, degrees.
    t_s : mid-exposure acquisition time, seconds since stream start.
    exposure_s : exposure time, seconds (≥ 0).
    data : (Y, U) frame; rows run along the tilt axis. Arrays from ``unpack`` are read-only.
    dose_e_per_A2 : electron dose of this frame, e⁻/Å² (≥ 0).
    temperature_C : sample temperature, °C.
    pixel_nm : pixel size, nm (> 0).
    tilt_range_deg : (lo, hi) tilt range in degrees.
    stage_xyz : stage position (x, y, z), nm.
    focus_index : index within a through-focus set (≥ 0).
    """

    NAME: ClassVar[str] = "frame"
    VERSION: ClassVar[int] = 1

    seq: int
    stream_id: str
    angle_deg: float
    t_s: float
    exposure_s: float
    data: np.ndarray
    dose_e_per_A2: float | None = None
    temperature_C: float | None = None
    pixel_nm: float | None = None
    tilt_range_deg: tuple[float, float] | None = None
    stage_xyz: tuple[float, float, float] | None = None
    focus_index: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tilt_range_deg", _as_tuple(self.tilt_range_deg))
        object.__setattr__(self, "stage_xyz", _as_tuple(self.stage_xyz))


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class EndMsg(_Base):
    """``end/1``: the series is over. Header only.

    Attributes
    ----------
    stream_id : series id.
    n_frames : number of frames the sender published (seq 0 .. n_frames-1).
    reason : why it ended, e.g. ``"complete"``, ``"aborted"``, ``"error: ..."``.
    """

    NAME: ClassVar[str] = "end"
    VERSION: ClassVar[int] = 1

    stream_id: str
    n_frames: int
    reason: str


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class VolumeMsg(_Base):
    """``volume/1``: a reconstructed (usually downsampled) volume. Parts ``[header, buffer]``.

    Attributes
    ----------
    stream_id : series id of the frames it was reconstructed from.
    seq : number of this volume among the series' volumes, 0, 1, 2, ... (each published type
        counts its own; gaps mean lost volumes).
    t_s : time the volume represents, seconds since stream start.
    data : (Z, Y, X) volume. Arrays from ``unpack`` are read-only.
    source : producing method, e.g. ``"sirt"`` or ``"dip"``.
    n_frames_used : number of frames that went into it.
    voxel_nm : voxel size, nm (> 0); None when unknown.
    """

    NAME: ClassVar[str] = "volume"
    VERSION: ClassVar[int] = 1

    stream_id: str
    seq: int
    t_s: float
    data: np.ndarray
    source: str
    n_frames_used: int
    voxel_nm: float | None = None


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class SlicesMsg(_Base):
    """``slices/1``: three orthogonal slices. Parts ``[header, xy, xz, yz]``.

    With a volume of shape (Z, Y, X): ``xy`` is (Y, X) at z = index[0], ``xz`` is (Z, X) at
    y = index[1], ``yz`` is (Z, Y) at x = index[2]. All three share one dtype, and their shapes
    must agree on Z, Y and X.

    Attributes
    ----------
    stream_id, seq, t_s, source : as in :class:`VolumeMsg`.
    xy, xz, yz : the slices (read-only when from ``unpack``).
    index : (z, y, x) position of the slices in the volume.
    voxel_nm : voxel size, nm (> 0); None when unknown.
    """

    NAME: ClassVar[str] = "slices"
    VERSION: ClassVar[int] = 1

    stream_id: str
    seq: int
    t_s: float
    xy: np.ndarray
    xz: np.ndarray
    yz: np.ndarray
    index: tuple[int, int, int]
    source: str
    voxel_nm: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", _as_tuple(self.index))


@dataclass(frozen=True, kw_only=True, eq=False, repr=False)
class MetricsMsg(_Base):
    """``metrics/1``: named scalar values (losses, rates, reject counts). Header only.

    Attributes
    ----------
    stream_id, seq, t_s : as in :class:`VolumeMsg`.
    values : name -> finite float.
    """

    NAME: ClassVar[str] = "metrics"
    VERSION: ClassVar[int] = 1

    stream_id: str
    seq: int
    t_s: float
    values: dict[str, float]


Message = StartMsg | FrameMsg | EndMsg | VolumeMsg | SlicesMsg | MetricsMsg

#: Message name -> {supported version -> class}.
MESSAGE_TYPES: dict[str, dict[int, type[_Base]]] = {
    cls.NAME: {cls.VERSION: cls}
    for cls in (StartMsg, FrameMsg, EndMsg, VolumeMsg, SlicesMsg, MetricsMsg)
}

_FRAME_DEFAULTS: dict[str, Any] = {
    f.name: f.default
    for f in fields(FrameMsg)  # type: ignore[arg-type]
    if f.default is not MISSING
}


def _frame_from_fields(values: dict[str, Any]) -> FrameMsg:
    """A :class:`FrameMsg` from values already validated and normalised, without ``__init__``.

    The codec's fast path (``validate_frame_fast`` has produced ``values``: tuples where the class
    keeps tuples); absent optional fields take their defaults. Equal to ``FrameMsg(**values)``.
    """
    msg = object.__new__(FrameMsg)
    state = msg.__dict__
    state.update(_FRAME_DEFAULTS)
    state.update(values)
    return msg
