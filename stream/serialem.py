"""SerialEM ``.mdoc`` metadata files, read with the ``mdocfile`` package (optional extra ``formats``).

An ``.mdoc`` beside an MRC stack (``series.mrc.mdoc`` as SerialEM names it, or ``series.mdoc``)
has one ``[ZValue = N]`` section per frame N of the stack, in stack order, which for SerialEM's
continuous and golden-ratio schemes is the order of acquisition. Per frame it gives:

* ``TiltAngle`` (degrees) -> the tilt angle;
* ``TimeStamp`` (seconds since 2000) or, without it, ``DateTime`` (``31-Mar-23  16:24:15``, one
  second resolution) -> the frame time, in seconds after that of the first section;
* ``ExposureTime`` (s) -> the exposure; ``ExposureDose`` (e/Å², 0 in STEM: not measured) -> the
  ``dose_e_per_A2`` extra field when any frame has a dose;
* ``PixelSpacing`` (Å, the section's, else the global one) -> the pixel size in nm.

A per-frame file that SerialEM writes for a folder watch has an ``.mdoc`` with one section.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.optional import require

__all__ = ["MDOC_SUFFIX", "Mdoc", "read_mdoc", "mdoc_fields", "mdoc_frame_fields"]

_log = logging.getLogger(__name__)

MDOC_SUFFIX = ".mdoc"
_DATETIME_FORMATS = ("%d-%b-%y %H:%M:%S", "%d-%b-%Y %H:%M:%S")


@dataclass
class Mdoc:
    """The per-frame values of an ``.mdoc`` file, frames in ``ZValue`` order (all (N,) float64).

    ``stamps_s`` are absolute times in seconds (``TimeStamp``, or ``DateTime`` as seconds since
    1970 UTC), None when a section has neither; ``time_detail`` says which. ``exposure_s`` and
    ``dose_e_per_A2`` are None when a section lacks them (or, for the dose, when all are 0).
    """

    path: Path
    angles_deg: np.ndarray
    stamps_s: np.ndarray | None
    time_detail: str
    exposure_s: np.ndarray | None
    dose_e_per_A2: np.ndarray | None
    pixel_nm: float | None


class _Quiet(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.WARNING  # "Unknown fields will be preserved" for every file


@contextmanager
def _quiet_mdocfile() -> Iterator[None]:
    logger, quiet = logging.getLogger("mdocfile"), _Quiet()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _parse(path: Path) -> Any:
    """The ``mdocfile.Mdoc`` model of ``path``; a pydantic error becomes a one-line FileFormatError."""
    require("mdocfile", path, "SerialEM .mdoc files")
    from mdocfile.data_models import Mdoc as MdocModel  # noqa: PLC0415

    try:
        import pydantic  # noqa: PLC0415

        invalid: type[Exception] = pydantic.ValidationError
    except ImportError:  # pragma: no cover - mdocfile depends on pydantic
        invalid = ValueError
    with reading(path, "a SerialEM .mdoc file of 'key = value' lines and [ZValue = N] sections"), _quiet_mdocfile():
        try:
            return MdocModel.from_file(path)
        except invalid as e:
            err = e.errors()[0]  # type: ignore[attr-defined]
            where = ".".join(str(x) for x in err.get("loc", ()))
            raise FileFormatError(path, where or "mdoc", f"a valid value ({err.get('msg', '')})",
                                  repr(err.get("input"))) from None


def _section_value(section: Any, name: str) -> Any:
    value = getattr(section, name, None)
    if value is None and section.model_extra:
        value = section.model_extra.get(name)
    return value


def _number(path: Path, where: str, name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise FileFormatError(path, f"{where} {name}", "a number", repr(value)) from None
    if not math.isfinite(out):
        raise FileFormatError(path, f"{where} {name}", "a finite number", repr(value))
    return out


def _datetime_s(path: Path, where: str, text: str) -> float:
    joined = " ".join(str(text).split())
    for fmt in _DATETIME_FORMATS:
        try:
            return datetime.strptime(joined, fmt).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise FileFormatError(path, f"{where} DateTime", "a SerialEM date and time like '31-Mar-23  16:24:15'", repr(text))


def _column(path: Path, sections: list[Any], name: str) -> list[Any] | None:
    """``name`` of every section, or None when no section has it; a gap is an error."""
    values = [_section_value(s, name) for s in sections]
    missing = [i for i, v in enumerate(values) if v is None]
    if len(missing) == len(values):
        return None
    if missing:
        raise FileFormatError(path, f"[ZValue = {missing[0]}]", f"{name} as in the other sections", "none")
    return values


def read_mdoc(path: Path, n_frames: int | None = None) -> Mdoc:
    """Parse ``path``; ``n_frames`` (the stack's frame count) is checked against the sections."""
    model = _parse(path)
    sections = [s for s in model.section_data if s.ZValue is not None]
    if not sections:
        raise FileFormatError(path, "sections", "[ZValue = N] sections, one per frame", "none")
    zvalues = [int(s.ZValue) for s in sections]
    if sorted(zvalues) != list(range(len(sections))):
        raise FileFormatError(path, "ZValue", f"sections [ZValue = 0] to [ZValue = {len(sections) - 1}], each once",
                              f"ZValues {sorted(zvalues)[:10]}" + (" ..." if len(zvalues) > 10 else ""))
    sections = [sections[zvalues.index(z)] for z in range(len(sections))]
    if n_frames is not None and len(sections) != n_frames:
        raise FileFormatError(path, "sections", f"{n_frames} [ZValue = N] sections (one per frame of the stack)",
                              len(sections))
    angles_deg = _floats_or_none(path, sections, "TiltAngle")
    if angles_deg is None:
        raise FileFormatError(path, "TiltAngle", "a TiltAngle in every [ZValue = N] section", "none")
    stamps, detail = _floats_or_none(path, sections, "TimeStamp"), f"{path}: TimeStamp"
    if stamps is None:
        detail = "no TimeStamp or DateTime in the sections"
        raw = _column(path, sections, "DateTime")
        if raw is not None:
            stamps = np.array([_datetime_s(path, f"[ZValue = {i}]", v) for i, v in enumerate(raw)])
            detail = f"{path}: DateTime (1 s resolution)"
    exposure = _floats_or_none(path, sections, "ExposureTime")
    if exposure is not None and (exposure < 0).any():
        neg = np.flatnonzero(exposure < 0)
        raise FileFormatError(path, f"[ZValue = {neg[0]}] ExposureTime", "an exposure time in s >= 0",
                              f"{exposure[neg[0]]:g}")
    dose = _floats_or_none(path, sections, "ExposureDose")
    if dose is not None and not np.any(dose > 0):
        dose = None  # SerialEM writes 0 where it has no dose (STEM)
    spacing = _floats_or_none(path, sections, "PixelSpacing")
    pixel_a = float(spacing[0]) if spacing is not None else model.global_data.PixelSpacing
    if spacing is not None and np.ptp(spacing) > 1e-6 * spacing[0]:
        _log.warning("%s: PixelSpacing differs between sections (%g to %g A); using the first", path,
                     spacing.min(), spacing.max())
    pixel_nm = float(f"{pixel_a / 10.0:.7g}") if pixel_a is not None and pixel_a > 0 else None
    return Mdoc(path=path, angles_deg=angles_deg, stamps_s=stamps, time_detail=detail, exposure_s=exposure,
                dose_e_per_A2=dose, pixel_nm=pixel_nm)


def _floats_or_none(path: Path, sections: list[Any], name: str) -> np.ndarray | None:
    values = _column(path, sections, name)
    if values is None:
        return None
    return np.array([_number(path, f"[ZValue = {i}]", name, v) for i, v in enumerate(values)])


def mdoc_fields(mdoc: Mdoc) -> dict[str, Any]:
    """RawSeries fields of a stack's ``.mdoc``: angles, times (where stamped), exposure, dose, pixel size."""
    out: dict[str, Any] = {"angles_deg": mdoc.angles_deg, "extra": {}}
    if mdoc.stamps_s is not None:
        out.update(times_s=mdoc.stamps_s - mdoc.stamps_s[0], time_source="timestamps", time_detail=mdoc.time_detail)
    if mdoc.exposure_s is not None:
        out["exposure_s"] = mdoc.exposure_s
    if mdoc.dose_e_per_A2 is not None:
        out["extra"]["dose_e_per_A2"] = mdoc.dose_e_per_A2
    if mdoc.pixel_nm is not None:
        out["pixel_nm"] = mdoc.pixel_nm
    return out


def mdoc_frame_fields(path: Path) -> dict[str, Any]:
    """Frame fields of a one-frame file's ``.mdoc`` for the folder watcher.

    Keys: ``angle_deg``, and where the section has them ``timestamp_s`` (absolute, s),
    ``exposure_s``, ``dose_e_per_A2``, ``pixel_nm``.
    """
    mdoc = read_mdoc(path, 1)
    out: dict[str, Any] = {"angle_deg": float(mdoc.angles_deg[0])}
    if mdoc.stamps_s is not None:
        out["timestamp_s"] = float(mdoc.stamps_s[0])
    if mdoc.exposure_s is not None:
        out["exposure_s"] = float(mdoc.exposure_s[0])
    if mdoc.dose_e_per_A2 is not None:
        out["dose_e_per_A2"] = float(mdoc.dose_e_per_A2[0])
    if mdoc.pixel_nm is not None:
        out["pixel_nm"] = mdoc.pixel_nm
    return out
