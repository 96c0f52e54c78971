"""Header validation for the tiltstream wire protocol: field validators and whole-header checks.

:func:`validate_header` checks a decoded header map against the schema tables of
:mod:`tiltstream.stream.schema` and raises :class:`~tiltstream.stream.messages.ProtocolError`
with a reason code for anything wrong; :func:`validate_frame_fast` accepts the common ``frame/1``
header at a fraction of the cost (and defers everything else to :func:`validate_header`);
:func:`check_finite_data` screens float array data. The codec (:mod:`tiltstream.stream.protocol`)
calls them; import messages and the codec from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tiltstream.stream.messages import DEFAULT_LIMITS, MESSAGE_TYPES, Limits, ProtocolError
from tiltstream.stream.schema import (
    _ARRAYS,
    _DTYPE_SPELLINGS,
    _FIELD_KINDS,
    _REQUIRED,
    ALLOWED_DTYPES,
    _key,
    _show,
)

__all__ = [
    "validate_header",
    "validate_frame_fast",
    "check_finite_data",
    "check_field",
    "check_frame",
    "FrameRejected",
    "ANGLE_LIMIT_DEG",
    "ArraySpec",
]

#: Tilt angles are degrees in [-ANGLE_LIMIT_DEG, ANGLE_LIMIT_DEG] everywhere (wire, files, solvers).
ANGLE_LIMIT_DEG = 180.0


# ---------------------------------------------------------------------------------------------
# Field validators: (name, value, limits) -> normalised value, or raise ProtocolError.


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _float(name: str, value: Any, limits: Limits) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError("bad_field_type", f"{name}: expected a number, got {_show(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise ProtocolError("non_finite", f"{name}: expected a finite number, got {out!r}")
    return out


def _bounded(ok: Callable[[float], bool], expected: str) -> Callable[[str, Any, Limits], float]:
    """A validator of finite numbers for which ``ok`` holds; ``expected`` says which those are."""

    def check(name: str, value: Any, limits: Limits) -> float:
        out = _float(name, value, limits)
        if not ok(out):
            raise ProtocolError("bad_value", f"{name}: expected {expected}, got {out!r}")
        return out

    return check


_angle = _bounded(lambda v: -ANGLE_LIMIT_DEG <= v <= ANGLE_LIMIT_DEG,
                  f"degrees in [-{ANGLE_LIMIT_DEG:g}, {ANGLE_LIMIT_DEG:g}]")
_nonneg = _bounded(lambda v: v >= 0, ">= 0")
_temperature = _bounded(lambda v: v >= -273.15, ">= -273.15 (degC)")
# sizes stay far from overflow once binned or downsampled (a pixel of a millimetre is no TEM pixel)
_pixel_nm = _bounded(lambda v: 0 < v <= 1e6, "nm in (0, 1e6]")
_voxel_nm = _bounded(lambda v: 0 < v <= 1e9, "nm in (0, 1e9]")


def _count(name: str, value: Any, limits: Limits) -> int:
    if not _is_int(value):
        raise ProtocolError("bad_field_type", f"{name}: expected an int, got {_show(value)}")
    if not 0 <= value < 2**63:
        raise ProtocolError("bad_value", f"{name}: expected 0 <= {name} < 2**63, got {value}")
    return value


def _text(name: str, value: Any, limits: Limits) -> str:
    if not isinstance(value, str):
        raise ProtocolError("bad_field_type", f"{name}: expected a str, got {_show(value)}")
    if len(value) > limits.max_str_chars:
        raise ProtocolError(
            "bad_value", f"{name}: expected <= {limits.max_str_chars} chars, got {len(value)}"
        )
    return value


def _id(name: str, value: Any, limits: Limits) -> str:
    out = _text(name, value, limits)
    if not out:
        raise ProtocolError("bad_value", f"{name}: expected a non-empty str, got ''")
    return out


def _seq_of(name: str, value: Any, n: int) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ProtocolError("bad_field_type", f"{name}: expected a list of {n}, got {_show(value)}")
    if len(value) != n:
        raise ProtocolError("bad_value", f"{name}: expected {n} elements, got {len(value)}")
    return list(value)


def _range2(name: str, value: Any, limits: Limits) -> tuple[float, float]:
    lo, hi = (_float(f"{name}[{i}]", v, limits) for i, v in enumerate(_seq_of(name, value, 2)))
    if not lo < hi:
        raise ProtocolError("bad_value", f"{name}: expected lo < hi, got [{lo!r}, {hi!r}]")
    return lo, hi


def _xyz(name: str, value: Any, limits: Limits) -> tuple[float, ...]:
    return tuple(_float(f"{name}[{i}]", v, limits) for i, v in enumerate(_seq_of(name, value, 3)))


def _index3(name: str, value: Any, limits: Limits) -> tuple[int, ...]:
    return tuple(_count(f"{name}[{i}]", v, limits) for i, v in enumerate(_seq_of(name, value, 3)))


def _shape(name: str, value: Any, ndim: int, max_elements: int) -> tuple[int, ...]:
    if not isinstance(value, (list, tuple)):
        raise ProtocolError("bad_field_type", f"{name}: expected a list of {ndim} ints, got {_show(value)}")
    if len(value) != ndim or not all(_is_int(v) and v > 0 for v in value):
        raise ProtocolError("bad_shape", f"{name}: expected {ndim} positive ints, got {_show(value)}")
    n = math.prod(value)
    if n > max_elements:
        raise ProtocolError("too_large", f"{name}: {list(value)} has {n} elements, limit {max_elements}")
    return tuple(value)


def _frame_shape(name: str, value: Any, limits: Limits) -> tuple[int, ...]:
    return _shape(name, value, 2, limits.max_frame_elements)


def _dtype(name: str, value: Any, limits: Limits) -> str:
    if not isinstance(value, str):
        raise ProtocolError("bad_field_type", f"{name}: expected a dtype str, got {_show(value)}")
    dt = _DTYPE_SPELLINGS.get(value)
    if dt is None:
        allowed = ", ".join(d.str for d in ALLOWED_DTYPES)
        raise ProtocolError("bad_dtype", f"{name}: expected one of {allowed}, got {_show(value)}")
    return dt.str


def _str_keys(name: str, value: Any, max_len: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ProtocolError("bad_field_type", f"{name}: expected a map, got {_show(value)}")
    if len(value) > max_len:
        raise ProtocolError("too_large", f"{name}: {len(value)} entries, limit {max_len}")
    for key in value:
        if not isinstance(key, str):
            raise ProtocolError("bad_field_type", f"{name}: expected str keys, got {_show(key)}")
    return value


def _units(name: str, value: Any, limits: Limits) -> dict[str, str]:
    for key, unit in _str_keys(name, value, limits.max_metrics).items():
        _text(f"{name}[{_key(key)}]", unit, limits)
    return dict(value)


def _metrics(name: str, value: Any, limits: Limits) -> dict[str, float]:
    return {
        key: _float(f"{name}[{_key(key)}]", v, limits)
        for key, v in _str_keys(name, value, limits.max_metrics).items()
    }


def _json(name: str, value: Any, limits: Limits, depth: int = 0) -> Any:
    if depth > limits.max_nesting:
        raise ProtocolError("too_large", f"{name}: nested deeper than {limits.max_nesting}")
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _float(name, value, limits)
    if isinstance(value, list):
        return [_json(f"{name}[{i}]", v, limits, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: _json(f"{name}[{_key(k)}]", v, limits, depth + 1)
            for k, v in _str_keys(name, value, limits.max_header_bytes).items()
        }
    raise ProtocolError("bad_field_type", f"{name}: expected JSON-like data, got {_show(value)}")


def _experiment(name: str, value: Any, limits: Limits) -> dict[str, Any]:
    _str_keys(name, value, limits.max_header_bytes)
    return _json(name, value, limits)


_VALIDATORS: dict[str, Callable[[str, Any, Limits], Any]] = {
    "id": _id,
    "text": _text,
    "count": _count,
    "float": _float,
    "angle": _angle,
    "nonneg": _nonneg,
    "temperature": _temperature,
    "pixel_nm": _pixel_nm,
    "voxel_nm": _voxel_nm,
    "range2": _range2,
    "xyz": _xyz,
    "index3": _index3,
    "frame_shape": _frame_shape,
    "dtype": _dtype,
    "units": _units,
    "json": _experiment,
    "metrics": _metrics,
}


# ---------------------------------------------------------------------------------------------
# Whole-header checks.


def _message_class(header: dict[str, Any]) -> tuple[str, type]:
    if "type" not in header:
        raise ProtocolError("missing_field", "type: required, absent")
    value = header["type"]
    if not isinstance(value, str):
        raise ProtocolError("bad_field_type", f"type: expected a str like 'frame/1', got {_show(value)}")
    name, sep, version = value.partition("/")
    if name not in MESSAGE_TYPES:
        raise ProtocolError(
            "unknown_type", f"type: expected one of {sorted(MESSAGE_TYPES)}, got {_show(value)}"
        )
    versions = MESSAGE_TYPES[name]
    ok = sep and len(version) <= 9 and version.isascii() and version.isdigit()
    if not (ok and int(version) in versions):
        expected = ", ".join(f"{name}/{v}" for v in versions)
        raise ProtocolError("bad_version", f"type: expected {expected}, got {_show(value)}")
    return name, versions[int(version)]


ArraySpec = tuple[str, tuple[int, ...], np.dtype]


def validate_header(
    header: dict[str, Any], limits: Limits
) -> tuple[type, dict[str, Any], list[ArraySpec]]:
    """Check a decoded header against the schema of its ``type``.

    Returns the message class, the validated field values (keyword arguments for the class, without
    the arrays) and, for each array part, ``(field name, shape, dtype)``. Raises
    :class:`ProtocolError`.
    """
    name, cls = _message_class(header)
    kinds = _FIELD_KINDS[name]
    arrays = _ARRAYS[name]
    if limits.strict:
        known = {"type", *kinds, *(a[1] for a in arrays), *(("dtype",) if arrays else ())}
        unknown = sorted(set(header) - known)
        if unknown:
            raise ProtocolError("unknown_field", f"{name}: unknown header fields {_show(unknown)}")
    required = _REQUIRED[name]
    kwargs: dict[str, Any] = {}
    for field_name, kind in kinds.items():
        if field_name not in header:
            if field_name in required:
                raise ProtocolError("missing_field", f"{field_name}: required by {name}, absent")
            continue
        value = header[field_name]
        if value is None and field_name not in required:
            continue
        kwargs[field_name] = _VALIDATORS[kind](field_name, value, limits)
    specs: list[ArraySpec] = []
    if arrays:
        if "dtype" not in header:
            raise ProtocolError("missing_field", f"dtype: required by {name}, absent")
        dtype = np.dtype(_dtype("dtype", header["dtype"], limits))
        for field_name, key, ndim, limit_attr in arrays:
            if key not in header:
                raise ProtocolError("missing_field", f"{key}: required by {name}, absent")
            shape = _shape(key, header[key], ndim, getattr(limits, limit_attr))
            specs.append((field_name, shape, dtype))
    if name == "slices":
        _check_slices(kwargs["index"], *(shape for _, shape, _ in specs))
    return cls, kwargs, specs


_MAX_COUNT = 2**63
_INF = math.inf
# type, seq, stream_id, angle_deg, t_s, exposure_s, shape, dtype: a frame/1 header without options
_FRAME_BASE_KEYS = 8


def validate_frame_fast(
    header: dict[str, Any], limits: Limits
) -> tuple[dict[str, Any], tuple[int, int], np.dtype] | None:
    """The common case of a ``frame/1`` header, checked cheaply; None: ask :func:`validate_header`.

    One dict lookup and exact-type tests per field, no per-field function calls. Accepts only
    headers that :func:`validate_header` accepts, with the same normalised values: the message
    fields present (absent optional fields are left out), the frame shape and the dtype. Anything
    unusual (a field missing, nil or of another type, an int where a float is expected, a value out
    of range, ``limits.strict``) gives None, and the caller runs :func:`validate_header`, which
    accepts it or raises the :class:`ProtocolError` that names the fault. The caller has checked
    that ``header["type"] == "frame/1"`` and that every key is a str.
    """
    if limits.strict:
        return None
    get = header.get
    seq = get("seq")
    stream_id = get("stream_id")
    angle = get("angle_deg")
    t_s = get("t_s")
    exposure = get("exposure_s")
    shape = get("shape")
    dtype_str = get("dtype")
    # x - x is 0.0 for finite floats and NaN for NaN and ±Inf
    if type(seq) is not int or not 0 <= seq < _MAX_COUNT:
        return None
    if type(stream_id) is not str or not 0 < len(stream_id) <= limits.max_str_chars:
        return None
    if type(angle) is not float or not -ANGLE_LIMIT_DEG <= angle <= ANGLE_LIMIT_DEG:
        return None
    if type(t_s) is not float or t_s - t_s != 0.0:
        return None
    if type(exposure) is not float or not 0.0 <= exposure < _INF:
        return None
    if type(shape) is not list and type(shape) is not tuple or len(shape) != 2:
        return None
    rows, cols = shape
    if type(rows) is not int or type(cols) is not int or rows <= 0 or cols <= 0:
        return None
    if rows * cols > limits.max_frame_elements:
        return None
    dtype = _DTYPE_SPELLINGS.get(dtype_str) if type(dtype_str) is str else None
    if dtype is None:
        return None
    fields = {"seq": seq, "stream_id": stream_id, "angle_deg": angle, "t_s": t_s,
              "exposure_s": exposure}
    if len(header) > _FRAME_BASE_KEYS and not _frame_options_fast(get, fields):
        return None
    return fields, (rows, cols), dtype


def _frame_options_fast(get: Callable[[str], Any], fields: dict[str, Any]) -> bool:
    """Add the optional frame/1 fields present to ``fields``; False if one needs the full check."""
    for key, lowest in (("dose_e_per_A2", 0.0), ("temperature_C", -273.15)):
        value = get(key)
        if value is not None:
            if type(value) is not float or not lowest <= value < _INF:
                return False
            fields[key] = value
    value = get("pixel_nm")
    if value is not None:
        if type(value) is not float or not 0.0 < value <= 1e6:  # else the full check says why (_pixel_nm)
            return False
        fields["pixel_nm"] = value
    value = get("tilt_range_deg")
    if value is not None:
        if type(value) is not list and type(value) is not tuple or len(value) != 2:
            return False
        lo, hi = value
        if type(lo) is not float or type(hi) is not float or not -_INF < lo < hi < _INF:
            return False
        fields["tilt_range_deg"] = (lo, hi)
    value = get("stage_xyz")
    if value is not None:
        if type(value) is not list and type(value) is not tuple or len(value) != 3:
            return False
        for v in value:
            if type(v) is not float or v - v != 0.0:
                return False
        fields["stage_xyz"] = tuple(value)
    value = get("focus_index")
    if value is not None:
        if type(value) is not int or not 0 <= value < _MAX_COUNT:
            return False
        fields["focus_index"] = value
    return True


def _check_slices(
    index: tuple[int, ...], xy: tuple[int, ...], xz: tuple[int, ...], yz: tuple[int, ...]
) -> None:
    """xy (Y, X), xz (Z, X), yz (Z, Y) must agree; index (z, y, x) must lie inside."""
    if not (xy[1] == xz[1] and xz[0] == yz[0] and xy[0] == yz[1]):
        raise ProtocolError(
            "bad_shape",
            f"slices: expected xy (Y, X), xz (Z, X), yz (Z, Y) of one volume, "
            f"got xy {list(xy)}, xz {list(xz)}, yz {list(yz)}",
        )
    volume = (xz[0], xy[0], xy[1])
    if not all(i < n for i, n in zip(index, volume, strict=True)):
        raise ProtocolError("bad_value", f"index: expected (z, y, x) inside {volume}, got {index}")


@np.errstate(all="ignore")  # an overflow of the screen only sends it to the exact test
def _square_sum(flat: np.ndarray) -> float:
    return float(np.dot(flat, flat))


_F32_MAX = float(np.finfo(np.float32).max)


def _non_finite_as_float32(array: np.ndarray) -> str | None:
    """What makes a float array non-finite once computed with in float32 (NaN/Inf, or a float64
    value beyond the float32 range, which becomes Inf), or None.

    Screens the data in one BLAS pass without a temporary: the sum of squares (``dot(a, a)`` on a
    flat view) is NaN or Inf whenever any element is, and stays below float32's largest value
    squared while every element fits float32. Only when the screen fails is each element tested.
    """
    if array.dtype.kind != "f":
        return None
    screen = _square_sum(array.reshape(-1)) if array.flags.c_contiguous else math.inf
    wide = array.dtype.itemsize > 4
    if math.isfinite(screen) and (not wide or screen <= _F32_MAX * _F32_MAX):
        return None
    bad = int(np.count_nonzero(~np.isfinite(array)))
    if bad:
        return f"{bad} NaN/Inf"
    if wide:
        peak = float(np.abs(array).max())
        if peak > _F32_MAX:
            return f"|values| up to {peak:.3g}, beyond the float32 range ({_F32_MAX:.3g}) they are computed in"
    return None


def check_finite_data(name: str, array: np.ndarray, limits: Limits) -> None:
    """Raise ``non_finite`` if a float array holds NaN/Inf or float64 values beyond the float32
    range (when ``limits.check_data_finite``); see :func:`_non_finite_as_float32`."""
    if not limits.check_data_finite:
        return
    why = _non_finite_as_float32(array)
    if why is not None:
        raise ProtocolError("non_finite", f"{name}: expected finite array data, got {why}")


# ---------------------------------------------------------------------------------------------
# The same rules for frames that do not come off the wire (publisher, replay, solvers).


class FrameRejected(ProtocolError):
    """A frame that breaks the frame rules, wherever it came from; ``reason`` as for the wire."""


def check_field(message: str, name: str, value: Any, limits: Limits = DEFAULT_LIMITS) -> Any:
    """``value`` of header field ``name`` of ``message`` (``"frame"``, ...), checked and normalised
    by the wire rules; raises :class:`FrameRejected` with the wire's reason code."""
    try:
        kind = _FIELD_KINDS[message][name]
    except KeyError:
        raise ValueError(f"check_field: {message}/1 has no field {name!r}") from None
    try:
        return _VALIDATORS[kind](name, value, limits)
    except ProtocolError as exc:
        raise FrameRejected(exc.reason, exc.detail) from None


def check_frame(
    data: Any,
    *,
    angle_deg: Any,
    t_s: Any,
    exposure_s: Any = 0.0,
    expected_shape: tuple[int, int] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[np.ndarray, float, float, float]:
    """Check one frame by the rules every receiver applies to ``frame/1``.

    Returns ``(data as an array, angle_deg, t_s, exposure_s)``. Raises :class:`FrameRejected`
    (reasons ``bad_shape``, ``too_large``, ``bad_dtype``, ``non_finite``, ``bad_value``,
    ``bad_field_type``) naming what was expected and what came.
    """
    angle = check_field("frame", "angle_deg", angle_deg, limits)
    t = check_field("frame", "t_s", t_s, limits)
    exposure = check_field("frame", "exposure_s", exposure_s, limits)
    array = np.asarray(data)
    if array.ndim != 2 or 0 in array.shape:
        raise FrameRejected("bad_shape", f"data: expected a non-empty 2-D array (Y, U), got shape {array.shape}")
    if expected_shape is not None and array.shape != tuple(expected_shape):
        raise FrameRejected("bad_shape", f"data: expected shape {tuple(expected_shape)} (Y, U), got {array.shape}")
    if array.size > limits.max_frame_elements:
        raise FrameRejected("too_large", f"data: {array.size} pixels, limit {limits.max_frame_elements}")
    if array.dtype.kind not in "biuf":
        raise FrameRejected("bad_dtype", f"data: expected a numeric array, got dtype {array.dtype}")
    why = _non_finite_as_float32(array)
    if why is not None:
        raise FrameRejected("non_finite", f"data: expected finite pixel values, got {why}")
    return array, angle, t, exposure
