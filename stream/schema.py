"""Wire schema of the tiltstream protocol: what each message type carries in its header and parts.

Per message name: the kind of each header field (checked by :mod:`tiltstream.stream.validation`),
the array parts with the header key of their shape, the required fields, and the dtypes arrays may
have on the wire; plus the helpers that phrase a :class:`~tiltstream.stream.messages.ProtocolError`.
The message dataclasses are in :mod:`tiltstream.stream.messages`.
"""

from __future__ import annotations

import reprlib
from dataclasses import MISSING, fields
from typing import Any

import numpy as np

from tiltstream.stream.messages import MESSAGE_TYPES

__all__ = ["ALLOWED_DTYPES"]

# Header fields a message of each name must carry: its dataclass fields without a default.
_REQUIRED: dict[str, frozenset[str]] = {
    name: frozenset(
        f.name
        for f in fields(versions[1])  # type: ignore[arg-type]
        if f.default is MISSING and f.default_factory is MISSING
    )
    for name, versions in MESSAGE_TYPES.items()
}

_DTYPE_NAMES = ("uint8", "uint16", "int16", "int32", "float32", "float64")
#: The dtypes arrays may have on the wire (little-endian).
ALLOWED_DTYPES: tuple[np.dtype, ...] = tuple(np.dtype(n).newbyteorder("<") for n in _DTYPE_NAMES)
_DTYPE_SPELLINGS: dict[str, np.dtype] = {}
for _name, _dt in zip(_DTYPE_NAMES, ALLOWED_DTYPES, strict=True):
    _DTYPE_SPELLINGS.update({_name: _dt, _dt.str: _dt, "<" + _dt.str[1:]: _dt})

# Header field kinds per message name; arrays are listed separately in _ARRAYS.
_FIELD_KINDS: dict[str, dict[str, str]] = {
    "start": {
        "stream_id": "id",
        "frame_shape": "frame_shape",
        "dtype": "dtype",
        "scheme": "text",
        "pixel_nm": "pixel_nm",
        "tilt_range_deg": "range2",
        "units": "units",
        "experiment": "json",
    },
    "frame": {
        "seq": "count",
        "stream_id": "id",
        "angle_deg": "angle",
        "t_s": "float",
        "exposure_s": "nonneg",
        "dose_e_per_A2": "nonneg",
        "temperature_C": "temperature",
        "pixel_nm": "pixel_nm",
        "tilt_range_deg": "range2",
        "stage_xyz": "xyz",
        "focus_index": "count",
    },
    "end": {"stream_id": "id", "n_frames": "count", "reason": "text"},
    "volume": {
        "stream_id": "id",
        "seq": "count",
        "t_s": "float",
        "source": "text",
        "n_frames_used": "count",
        "voxel_nm": "voxel_nm",
    },
    "slices": {
        "stream_id": "id",
        "seq": "count",
        "t_s": "float",
        "index": "index3",
        "source": "text",
        "voxel_nm": "voxel_nm",
    },
    "metrics": {"stream_id": "id", "seq": "count", "t_s": "float", "values": "metrics"},
}

# (dataclass field, header shape key, ndim, Limits attribute bounding its element count)
_ARRAYS: dict[str, tuple[tuple[str, str, int, str], ...]] = {
    "start": (),
    "frame": (("data", "shape", 2, "max_frame_elements"),),
    "end": (),
    "volume": (("data", "shape", 3, "max_volume_elements"),),
    "slices": (
        ("xy", "xy_shape", 2, "max_frame_elements"),
        ("xz", "xz_shape", 2, "max_frame_elements"),
        ("yz", "yz_shape", 2, "max_frame_elements"),
    ),
    "metrics": (),
}


def _key(key: str) -> str:
    """A map key for error details, clipped."""
    return _REPR.repr(key)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 3, 40, 40


def _show(value: Any) -> str:
    """Short description of an arrived value for error details (bounded depth and length)."""
    text = _REPR.repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
