"""MRC image stacks with IMOD-style tilt-angle files beside them.

``series.mrc`` (or ``.st``, ``.mrcs``, ``.ali``) holds the frames (N, Y, X) in stack order;
``series.rawtlt`` (else ``series.tlt``) one tilt angle per frame, in degrees. Optional
``series.csv`` (the angle/time CSV of :mod:`tiltstream.stream.sidecars`) adds frame times,
exposures and extra fields; its angles must agree with the tilt file (or replace it when there is
none). The pixel size comes from the MRC header (Å, converted to nm; a cell equal to the grid, 1 Å, is
the writers' "unset"). The tilt-axis angle comes
from an FEI extended header ("Tilt axis angle", assumed to follow the same convention), else an IMOD/SerialEM label such as
``"Tilt axis angle = 85.3, binning = 1"``, else a ``# tilt_axis_angle_deg=`` CSV comment.
Without times the frame index is used.

A SerialEM ``series.mrc.mdoc`` (or ``series.mdoc``, :mod:`tiltstream.stream.serialem`) gives the
angles (where there is no tilt file), frame times, exposures, dose and pixel size; the format is
then ``"serialem"``. Without a tilt file, CSV or ``.mdoc``, the angles of an FEI extended header
(FEI1/FEI2, or the older one of FEI tomography software) are used.

Pixel size, first that is known: a ``# pixel_nm=`` CSV comment; the MRC cell (Å); the FEI
extended header ("Pixel size X", m); the ``.mdoc`` ``PixelSpacing`` (Å); else unknown.
"""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

import mrcfile
import numpy as np

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.rawseries import RawSeries, check_per_frame
from tiltstream.stream.serialem import MDOC_SUFFIX, mdoc_fields, read_mdoc
from tiltstream.stream.series import TiltSeries
from tiltstream.stream.sidecars import fields_from_table, find_beside, read_angle_csv, read_tlt, write_angle_csv

__all__ = ["MRC_SUFFIXES", "open_mrc", "read_mrc_image", "write_mrc_series"]

_log = logging.getLogger(__name__)

MRC_SUFFIXES = (".mrc", ".mrcs", ".st", ".ali", ".preali", ".map")
_TILT_AXIS_LABEL = re.compile(r"tilt\s*axis\s*(?:rotation\s*)?angle\s*[=:]\s*([-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)", re.I)


def _check_words(path: Path, head: bytes, size: int) -> None:
    """Refuse a header whose grid, extended-header size or label count cannot be right.

    Read from the raw words (byte order from the machine stamp), before mrcfile, which fails on
    some of these with messages that do not say which field is wrong.
    """
    order = ">" if head[212] == 0x11 else "<"
    nx, ny, nz = (int(v) for v in np.frombuffer(head[:12], dtype=f"{order}i4"))
    nsymbt = int(np.frombuffer(head[92:96], dtype=f"{order}i4")[0])
    nlabl = int(np.frombuffer(head[220:224], dtype=f"{order}i4")[0])
    if min(nx, ny, nz) <= 0:
        raise FileFormatError(path, "MRC header: nx, ny, nz", "positive numbers of columns, rows and sections",
                              f"{nx}, {ny}, {nz}")
    if not 0 <= nsymbt <= size - 1024:
        raise FileFormatError(path, "MRC header: nsymbt", f"an extended header of 0 to {size - 1024} bytes "
                              f"(file size {size} bytes)", f"{nsymbt} bytes")
    if not 0 <= nlabl <= 10:
        raise FileFormatError(path, "MRC header: nlabl", "0 to 10 labels", nlabl)


def _checked_header(path: Path) -> tuple[Any, np.ndarray | None]:
    """Header copy and indexed FEI1/FEI2 extended header (or None) of ``path``, refused where the
    file size does not fit them."""
    size = path.stat().st_size
    if size < 1024:
        found = "an empty file (0 bytes)" if size == 0 else f"{size} bytes"
        raise FileFormatError(path, "MRC header", "a 1024-byte MRC header", found)
    with reading(path, "a readable MRC header", "MRC header"), open(path, "rb") as fh:
        head = fh.read(1024)
    _check_words(path, head, size)
    with warnings.catch_warnings(record=True) as caught, reading(path, "a valid MRC header", "MRC header"):
        warnings.simplefilter("always")
        with mrcfile.open(path, mode="r", permissive=True, header_only=True) as m:
            header = m.header.copy()
            ext = None
            if m.header.exttyp in (b"FEI1", b"FEI2") and m.indexed_extended_header is not None:
                ext = m.indexed_extended_header.copy()
    for w in caught:
        _log.warning("%s: %s", path, w.message)
    nx, ny, nz = (int(header.nx), int(header.ny), int(header.nz))
    try:
        itemsize = mrcfile.utils.dtype_from_mode(header.mode).itemsize
    except ValueError as e:
        raise FileFormatError(path, "MRC header: mode", "a known MRC data mode (0, 1, 2, 6, 12)", str(e)) from None
    expected_size = 1024 + int(header.nsymbt) + nx * ny * nz * itemsize
    what = f"{expected_size} bytes for {nz} x {ny} x {nx} values in mode {int(header.mode)}"
    if size < expected_size:
        raise FileFormatError(path, "data", what, f"a truncated file of {size} bytes")
    if size > expected_size:  # a wrong mode or grid in the header: reading it would scramble the frames
        raise FileFormatError(path, "data", what, f"a file of {size} bytes ({size - expected_size} more)")
    return header, ext


def _tilt_axis_from_header(header: Any, ext: np.ndarray | None) -> tuple[float | None, str | None]:
    if ext is not None and "Tilt axis angle" in (ext.dtype.names or ()):
        values = np.asarray(ext["Tilt axis angle"], dtype=np.float64)
        if values.size and np.isfinite(values[0]):
            return float(values[0]), "FEI extended header: Tilt axis angle"
    for i in range(int(header.nlabl)):
        text = bytes(header.label[i]).decode("ascii", "replace")
        match = _TILT_AXIS_LABEL.search(text)
        if match:
            return float(match.group(1)), f"MRC label {i}: {text.strip()!r}"
    return None, None


def _read_data(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The data of ``path`` as stored (dtype kept) in ``shape`` (a 2-D image or a stack (N, Y, X))."""
    with warnings.catch_warnings(), reading(path, "readable MRC data", "data"):
        warnings.simplefilter("ignore")
        with mrcfile.mmap(path, mode="r", permissive=True) as m:
            data = m.data
            if data is None or data.size != int(np.prod(shape)) or data.shape[-2:] != shape[-2:]:
                raise FileFormatError(path, "data", f"an array of shape {shape}",
                                      "no data" if data is None else f"shape {data.shape}")
            return np.array(data).reshape(shape)


def read_mrc_image(path: Path) -> np.ndarray:
    """The one 2-D frame (Y, X) of an MRC file, dtype as stored (the folder watcher's frames)."""
    header, _ = _checked_header(path)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if nz != 1:
        raise FileFormatError(path, "data", "one 2-D frame (Y, X) per file", f"a stack of {nz} frames of shape ({ny}, {nx})")
    return _read_data(path, (ny, nx))


_OLD_FEI_BYTES = 1024 * 128  # FEI's extended header before FEI1: 1024 records of 32 float32
_OLD_FEI_ANGLE, _OLD_FEI_PIXEL_M = 0, 11  # record fields: alpha tilt (deg), pixel size (m)


def _fei_fields(path: Path, header: Any, ext: np.ndarray | None, nz: int) -> dict[str, Any]:
    """``angles_deg`` and ``pixel_nm`` from an FEI extended header (FEI1/FEI2, or the older
    headerless one of FEI/Thermo tomography software: ``nsymbt`` = 131072, no ``exttyp``)."""
    out: dict[str, Any] = {}
    if ext is not None and len(ext) >= nz:
        angles, pixel_m = ext["Alpha tilt"][:nz], ext["Pixel size X"][0]
    elif int(header.nsymbt) == _OLD_FEI_BYTES and bytes(header.exttyp).strip(b"\0 ") == b"" and nz <= 1024:
        order = ">" if header.dtype.byteorder == ">" else "<"
        with reading(path, "a readable FEI extended header", "extended header"), open(path, "rb") as fh:
            fh.seek(1024)
            records = np.frombuffer(fh.read(_OLD_FEI_BYTES), dtype=f"{order}f4").reshape(1024, 32)
        angles, pixel_m = records[:nz, _OLD_FEI_ANGLE], records[0, _OLD_FEI_PIXEL_M]
    else:
        return out
    angles = np.asarray(angles, dtype=np.float64)
    if np.all(np.isfinite(angles)) and np.ptp(angles) > 0:  # all zero: not a tilt series' angles
        out["angles_deg"] = angles
    pixel_nm = float(pixel_m) * 1e9
    if np.isfinite(pixel_nm) and 1e-4 < pixel_nm < 1e6:
        out["pixel_nm"] = float(f"{pixel_nm:.7g}")  # float32 metres
    return out


def _cell_pixel_nm(path: Path, header: Any) -> float | None:
    """Pixel size from the MRC cell (Å over the sampling), None where the cell is unset (0, or 1 Å pixels)."""
    voxel_a = float(header.cella.x) / (int(header.mx) or int(header.nx))
    voxel_ay = float(header.cella.y) / (int(header.my) or int(header.ny))
    if voxel_a == 1.0 and voxel_ay == 1.0:
        # a cell equal to the grid (1 Å pixels) is what IMOD and mrcfile-based writers leave when the
        # pixel size is unknown; reporting 0.1 nm would be a guess dressed up as a measurement
        _log.info("%s: header pixel size is exactly 1 A, the value writers leave when it is unset; "
                  "pixel size taken from elsewhere or unknown", path)
        return None
    if not (voxel_a > 0 and np.isfinite(voxel_a)):
        return None
    if abs(voxel_ay - voxel_a) > 1e-4 * voxel_a:
        _log.warning("%s: x and y pixel sizes differ (%g, %g A); using x", path, voxel_a, voxel_ay)
    return float(f"{voxel_a / 10.0:.7g}")  # header holds float32 Å


def open_mrc(path: Path) -> RawSeries:
    """Read everything but the frames of an MRC stack and its sidecar files."""
    header, ext = _checked_header(path)
    nx, ny, nz = int(header.nx), int(header.ny), int(header.nz)
    if nz == 1:
        raise FileFormatError(path, "data", "a 3-D stack of frames (N, Y, X)", f"a 2-D image of shape ({ny}, {nx})")
    tlt = find_beside(path, (".rawtlt", ".tlt"))
    csv = find_beside(path, (".csv",))
    mdoc_path = find_beside(path, (MDOC_SUFFIX,))
    fei = _fei_fields(path, header, ext, nz)
    if tlt is None and csv is None and mdoc_path is None and "angles_deg" not in fei:
        raise FileFormatError(path, "angles", f"a tilt-angle file {path.with_suffix('.rawtlt').name} or "
                              f"{path.with_suffix('.tlt').name} (or {path.with_suffix('.csv').name} or a SerialEM "
                              f"{path.name}{MDOC_SUFFIX}; the file has no FEI extended header with angles) beside it",
                              "none")
    fields: dict[str, Any] = {"extra": {}}
    files = [str(path)]
    label = str(path)
    if mdoc_path is not None:
        files.append(str(mdoc_path))
        fields.update(mdoc_fields(read_mdoc(mdoc_path, nz)))
        fei.setdefault("pixel_nm", fields.pop("pixel_nm", None))  # the .mdoc's: after the header's
    if tlt is not None:  # the angles of a tilt file (IMOD's, perhaps corrected) win over the .mdoc's
        files.append(str(tlt))
        fields["angles_deg"] = check_per_frame(f"{path} + {tlt.name}", "angles", read_tlt(tlt), nz, what="angles")
    elif "angles_deg" not in fields and "angles_deg" in fei:
        fields["angles_deg"] = fei["angles_deg"]
    if csv is not None:
        files.append(str(csv))
        fields.update(fields_from_table(label, read_angle_csv(csv), nz, angles_deg=fields.get("angles_deg")))
    axis, axis_source = _tilt_axis_from_header(header, ext)
    if axis is not None:
        fields.setdefault("tilt_axis_angle_deg", axis)
        fields.setdefault("tilt_axis_source", axis_source)
    cell_nm = _cell_pixel_nm(path, header)
    if "pixel_nm" in fields and cell_nm is not None and abs(cell_nm - fields["pixel_nm"]) > 1e-3 * cell_nm:
        _log.warning("%s: pixel size %g nm from the CSV; the MRC header says %g nm", path, fields["pixel_nm"], cell_nm)
    fields.setdefault("pixel_nm", cell_nm if cell_nm is not None else fei.get("pixel_nm"))
    metadata: dict[str, Any] = {"mrc_mode": int(header.mode)}
    labels = [bytes(header.label[i]).decode("ascii", "replace").strip() for i in range(int(header.nlabl))]
    if labels:
        metadata["mrc_labels"] = labels
    if "csv_settings" in fields:
        metadata["csv_settings"] = fields.pop("csv_settings")
    if "times_s" not in fields:
        fields.update(times_s=np.arange(nz, dtype=np.float64), time_source="frame_index",
                      time_detail=f"no {path.with_suffix('.csv').name} with a time_s column"
                      + ("" if mdoc_path is None else f" and no time stamps in {mdoc_path.name}"))
    beside = [p.name for p in (mdoc_path, tlt) if p is not None]
    return RawSeries(
        label=" + ".join([label, *beside]),
        format="serialem" if mdoc_path is not None else "mrc",
        frame_shape=(ny, nx),
        dtype=str(mrcfile.utils.dtype_from_mode(header.mode)),
        load_frames=lambda: _read_data(path, (nz, ny, nx)).astype(np.float32, copy=False),
        metadata=metadata,
        files=files,
        **fields,
    )


def write_mrc_series(path: str | Path, series: TiltSeries, *, tilt_axis_angle_deg: float = 0.0,
                     overwrite: bool = False) -> None:
    """Write ``series`` as ``path`` (float32 MRC) + ``.rawtlt`` + ``.csv`` (times, exposure, extras).

    The tilt-axis angle is written as an IMOD-style label (``Tilt axis angle = ...``).
    """
    path = Path(path)
    with mrcfile.new(path, overwrite=overwrite) as m:
        m.set_data(np.ascontiguousarray(series.frames, dtype=np.float32))
        m.set_image_stack()
        if series.pixel_nm is not None:
            m.voxel_size = series.pixel_nm * 10.0
        m.header.label[1] = f"tiltstream: Tilt axis angle = {tilt_axis_angle_deg:.4f}".encode()[:80]
        m.header.nlabl = 2
    path.with_suffix(".rawtlt").write_text("".join(f"{a!r}\n" for a in series.angles_deg.tolist()))
    write_angle_csv(path.with_suffix(".csv"), series.angles_deg, series.times_s, exposure_s=series.exposure_s,
                    extra=series.extra)
