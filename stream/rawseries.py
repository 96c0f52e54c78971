"""What a format reader hands to :mod:`tiltstream.stream.readers`: a series as found in a file.

Every per-frame field is loaded and checked here; the frames themselves are only read by
``load_frames()``, so that ``describe()`` can summarise a large file cheaply.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tiltstream.stream.errors import FileFormatError

__all__ = [
    "RawSeries",
    "check_per_frame",
    "times_from_count_time",
    "tiltstream_version",
    "to_json",
    "unit_factor",
]


@dataclass
class RawSeries:
    """A tilt series as stored, before the frames are read and oriented.

    Attributes
    ----------
    label : the file(s) it comes from, for messages (``"a.mrc + a.rawtlt"``).
    format : short format name (``"tiltstream-recording"``, ``"nxtomo"``, ``"mrc"``, ``"tiff"``).
    frame_shape : (Y, X) as stored, before orientation.
    dtype : dtype of the stored frames.
    angles_deg : (N,) tilt angles in degrees.
    times_s : (N,) mid-exposure times in seconds since the first frame (frame index when
        ``time_source`` is ``"frame_index"``).
    time_source : ``"timestamps"``, ``"cumulative_count_time"`` or ``"frame_index"``;
        ``time_detail`` says where exactly.
    exposure_s : (N,) exposure times in seconds, or None.
    pixel_nm : sample-plane pixel size in nm, or None.
    extra : per-frame extra fields, name -> (N,) or (N, k).
    metadata : free-form metadata found in the file plus what the reader noted.
    tilt_axis_angle_deg : in-plane tilt-axis angle found in the file (IMOD convention, see
        :mod:`tiltstream.stream.orient`), or None; ``tilt_axis_source`` says where.
    load_frames : reads the (N, Y, X) frames as float32.
    files : every file that contributed.
    """

    label: str
    format: str
    frame_shape: tuple[int, int]
    dtype: str
    angles_deg: np.ndarray
    times_s: np.ndarray
    time_source: str
    time_detail: str
    load_frames: Callable[[], np.ndarray]
    exposure_s: np.ndarray | None = None
    pixel_nm: float | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    tilt_axis_angle_deg: float | None = None
    tilt_axis_source: str | None = None
    files: list[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return int(self.angles_deg.shape[0])


def check_per_frame(
    label: str, name: str, values: Any, n: int, *, what: str = "values", finite: bool = True
) -> np.ndarray:
    """``values`` as an (n,) float64 array, or FileFormatError naming ``label`` and ``name``.

    ``what`` names the things counted in the message (``"angles"``, ``"times"``).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise FileFormatError(label, name, f"a 1-D list of {n} {what} (one per frame)", f"shape {arr.shape}")
    if arr.shape[0] != n:
        raise FileFormatError(label, name, f"{n} {what} (one per frame)", arr.shape[0])
    if finite:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise FileFormatError(
                label, name, f"finite {what}", f"NaN/Inf at frame(s) {bad[:10].tolist()}" + (" ..." if bad.size > 10 else "")
            )
    return arr


def times_from_count_time(count_time_s: np.ndarray) -> np.ndarray:
    """Mid-exposure times of back-to-back exposures: ``t_i = sum_{j<i} c_j + c_i / 2`` (s)."""
    c = np.asarray(count_time_s, dtype=np.float64)
    return np.cumsum(c) - c / 2.0


_UNITS: dict[str, dict[str, float]] = {
    "angle": {"degree": 1.0, "degrees": 1.0, "deg": 1.0, "°": 1.0, "rad": 180.0 / np.pi, "radian": 180.0 / np.pi,
              "radians": 180.0 / np.pi, "mrad": 0.18 / np.pi},
    "time": {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "millisecond": 1e-3, "us": 1e-6,
             "µs": 1e-6, "microsecond": 1e-6, "ns": 1e-9, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0},
    "length": {"m": 1e9, "meter": 1e9, "metre": 1e9, "cm": 1e7, "mm": 1e6, "um": 1e3, "µm": 1e3, "micron": 1e3,
               "micrometer": 1e3, "nm": 1.0, "nanometer": 1.0, "a": 0.1, "å": 0.1, "angstrom": 0.1, "pm": 1e-3},
}
_DEFAULT_UNIT = {"angle": "degree", "time": "s", "length": "m"}


def unit_factor(label: str, name: str, unit: str | bytes | None, kind: str) -> float:
    """Factor converting a value in ``unit`` to degrees / seconds / nm (``kind`` angle/time/length).

    A missing unit means the NeXus default for the kind (degree, s, m).
    """
    if isinstance(unit, bytes):
        unit = unit.decode("utf-8", "replace")
    key = (unit or _DEFAULT_UNIT[kind]).strip()
    table = _UNITS[kind]
    if key in table:
        return table[key]
    if key.lower() in table:
        return table[key.lower()]
    raise FileFormatError(label, f"{name}@units", f"a {kind} unit ({', '.join(sorted(table))})", repr(key))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"metadata: expected JSON-serialisable values, got {type(obj).__name__}")


def to_json(obj: Any) -> str:
    """JSON text for metadata, with numpy scalars/arrays and paths converted."""
    return json.dumps(obj, default=_json_default)


def tiltstream_version() -> str:
    """Installed tiltstream version, or "unknown" when running from an uninstalled tree."""
    try:
        from importlib.metadata import version

        return version("tiltstream")
    except Exception:
        return "unknown"
