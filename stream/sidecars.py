"""Text files found beside image stacks: IMOD ``.rawtlt``/``.tlt`` and angle/time CSV files.

CSV convention (tiltstream's, after the DIP-STER authors' TIFF + CSV layout):

* one row per frame, in stack order; separators ``,`` ``;`` tab or spaces;
* an optional header row naming the columns; without one the columns are ``angle_deg, time_s``;
  with one, ``angle_deg`` (aliases angle, tilt, tilt_deg, tilt_angle) and ``time_s`` (time, t, t_s)
  are found by name, ``exposure_s`` (exposure) is the exposure time, any other numeric column is
  kept as a per-frame extra field;
* comment lines start with ``#``; ``# key=value`` comments carry settings, e.g.
  ``# tilt_axis_angle_deg=85.3`` or ``# pixel_nm=0.42``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.rawseries import check_per_frame

__all__ = ["AngleTable", "read_tlt", "read_angle_csv", "write_angle_csv", "fields_from_table", "find_beside"]

_log = logging.getLogger(__name__)

_ALIASES = {
    "angle_deg": ("angle_deg", "angle", "angles", "tilt", "tilt_deg", "tilt_angle", "tilt_angle_deg"),
    "time_s": ("time_s", "time", "t", "t_s", "times"),
    "exposure_s": ("exposure_s", "exposure", "exposure_time", "count_time"),
}
_SPLIT = re.compile(r"\s*[,;\t]\s*|\s+")


@dataclass
class AngleTable:
    """Columns of an angle/time CSV: name -> (N,) float64, plus ``# key=value`` settings."""

    path: Path
    columns: dict[str, np.ndarray]
    settings: dict[str, str] = field(default_factory=dict)


def find_beside(path: Path, suffixes: tuple[str, ...]) -> Path | None:
    """First existing ``<stem><suffix>`` or ``<name><suffix>`` beside ``path`` (``a.mrc`` -> ``a.rawtlt``)."""
    for suffix in suffixes:
        for candidate in (path.with_suffix(suffix), path.with_name(path.name + suffix)):
            if candidate != path and candidate.is_file():
                return candidate
    return None


def _text_lines(path: Path, expected: str) -> Iterator[tuple[int, str, str]]:
    """(line number, line, stripped text) of every non-blank line of the UTF-8 text file ``path`` (a byte-order mark, as Excel writes, skipped)."""
    with reading(path, expected):
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    return ((i, line, line.strip()) for i, line in enumerate(lines, start=1) if line.strip())


def read_tlt(path: Path) -> np.ndarray:
    """Tilt angles in degrees, one per line (IMOD ``.rawtlt``/``.tlt``); blank lines are ignored."""
    angles = []
    for i, line, text in _text_lines(path, "a readable text file of tilt angles"):
        try:
            angles.append(float(text.split()[0]))
        except ValueError:
            raise FileFormatError(path, f"line {i}", "one tilt angle in degrees per line", repr(line)) from None
    return np.asarray(angles, dtype=np.float64)


def _floats(tokens: list[str]) -> list[float] | None:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def read_angle_csv(path: Path) -> AngleTable:
    """Parse an angle/time CSV (see the module docstring)."""
    settings: dict[str, str] = {}
    header: list[str] | None = None
    rows: list[list[float]] = []
    for i, line, text in _text_lines(path, "a readable CSV file of angles and times"):
        if text.startswith("#"):
            body = text.lstrip("#").strip()
            if "=" in body:
                key, _, value = body.partition("=")
                settings[key.strip()] = value.strip()
            continue
        tokens = [t for t in _SPLIT.split(text) if t]
        values = _floats(tokens)
        if values is None:
            if header is None and not rows:
                header = [t.strip().strip('"') for t in tokens]
                continue
            raise FileFormatError(path, f"line {i}", "numbers (angle_deg, time_s, ...)", repr(line))
        width = len(header) if header is not None else len(rows[0]) if rows else len(values)
        if len(values) != width:
            raise FileFormatError(path, f"line {i}", f"{width} columns", f"{len(values)} in {line!r}")
        rows.append(values)
    if header is None and rows and len(rows[0]) > 2:
        _log.warning("%s: no header row; using the first two columns as angle_deg, time_s", path)
    table = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1) if rows else np.zeros((0, 1))
    names = header if header is not None else ["angle_deg", "time_s"][: table.shape[1]]
    columns: dict[str, np.ndarray] = {}
    for j, raw_name in enumerate(names):
        name = next((canon for canon, aliases in _ALIASES.items() if raw_name.lower() in aliases), raw_name)
        if name in columns:
            raise FileFormatError(path, "header", "distinct column names", f"{raw_name!r} twice")
        columns[name] = table[:, j] if j < table.shape[1] else np.zeros(0)
    if "angle_deg" not in columns:
        raise FileFormatError(path, "header", "a column angle_deg", f"columns {names}")
    return AngleTable(path=path, columns=columns, settings=settings)


def write_angle_csv(
    path: Path,
    angles_deg: np.ndarray,
    times_s: np.ndarray | None,
    *,
    exposure_s: np.ndarray | None = None,
    extra: dict[str, np.ndarray] | None = None,
    settings: dict[str, object] | None = None,
) -> None:
    """Write an angle/time CSV with a header row; values round-trip exactly (``repr``)."""
    cols: dict[str, np.ndarray] = {"angle_deg": np.asarray(angles_deg, dtype=np.float64)}
    if times_s is not None:
        cols["time_s"] = np.asarray(times_s, dtype=np.float64)
    if exposure_s is not None:
        cols["exposure_s"] = np.asarray(exposure_s, dtype=np.float64)
    for name, values in (extra or {}).items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim == 1:
            cols[name] = arr
        else:
            _log.warning("%s: extra field %r is not one number per frame; not written to the CSV", path, name)
    lines = [f"# {k}={v}" for k, v in (settings or {}).items()]
    lines.append(",".join(cols))
    lines += [",".join(repr(float(c[i])) for c in cols.values()) for i in range(len(cols["angle_deg"]))]
    path.write_text("\n".join(lines) + "\n")


def fields_from_table(
    label: str, table: AngleTable, n: int, *, angles_deg: np.ndarray | None = None
) -> dict[str, Any]:
    """RawSeries fields from a CSV describing ``n`` frames of the stack ``label``.

    When ``angles_deg`` already came from elsewhere (a ``.rawtlt``) the CSV angles must agree with
    them within 1e-4 degrees. Returns a dict with ``angles_deg`` and, where the CSV has them,
    ``times_s``/``time_source``/``time_detail``, ``exposure_s``, ``extra``, ``pixel_nm``,
    ``tilt_axis_angle_deg``/``tilt_axis_source`` and ``csv_settings``.
    """
    where = f"{label} + {table.path.name}"
    cols = dict(table.columns)
    angles = check_per_frame(where, "angle_deg", cols.pop("angle_deg"), n, what="angles")
    if angles_deg is not None:
        bad = np.flatnonzero(np.abs(angles - angles_deg) > 1e-4)
        if bad.size:
            raise FileFormatError(where, "angle_deg", "the same angles as the tilt-angle file",
                                  f"different angles at frame(s) {bad[:10].tolist()}")
        angles = angles_deg
    out: dict[str, Any] = {"angles_deg": angles, "extra": {}}
    if "time_s" in cols:
        out["times_s"] = check_per_frame(where, "time_s", cols.pop("time_s"), n, what="times")
        out["time_source"], out["time_detail"] = "timestamps", f"{table.path}: time_s column"
    if "exposure_s" in cols:
        out["exposure_s"] = check_per_frame(where, "exposure_s", cols.pop("exposure_s"), n, what="exposure times")
    for name, values in cols.items():
        out["extra"][name] = check_per_frame(where, name, values, n, finite=False)
    if "tilt_axis_angle_deg" in table.settings:
        out["tilt_axis_angle_deg"] = _setting_float(table, "tilt_axis_angle_deg")
        out["tilt_axis_source"] = f"{table.path}: # tilt_axis_angle_deg"
    if "pixel_nm" in table.settings:
        out["pixel_nm"] = _setting_float(table, "pixel_nm")
    others = {k: v for k, v in table.settings.items() if k not in ("tilt_axis_angle_deg", "pixel_nm")}
    if others:
        out["csv_settings"] = others
    return out


def _setting_float(table: AngleTable, key: str) -> float:
    try:
        value = float(table.settings[key])
    except ValueError:
        raise FileFormatError(table.path, f"# {key}", "a number", repr(table.settings[key])) from None
    if not np.isfinite(value):
        raise FileFormatError(table.path, f"# {key}", "a finite number", value)
    return value
