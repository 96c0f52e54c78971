"""TIFF stacks (one multi-page file or a folder of single-image files) plus an angle/time CSV.

The CSV (format in :mod:`tiltstream.stream.sidecars`) is found by name: ``series.tif`` ->
``series.csv`` (or ``series.tif.csv``); folder ``frames/`` -> ``frames.csv`` beside it, else the
only ``*.csv`` inside it. Files in a folder are taken in natural order (``f2.tif`` before
``f10.tif``). The pixel size comes from a ``# pixel_nm=`` CSV comment, else the TIFF resolution
tags (ImageJ ``unit`` or the TIFF resolution unit); the tilt-axis angle from a
``# tilt_axis_angle_deg=`` comment.
"""

from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import tifffile

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.rawseries import RawSeries, unit_factor
from tiltstream.stream.series import TiltSeries
from tiltstream.stream.sidecars import fields_from_table, find_beside, read_angle_csv, write_angle_csv

__all__ = ["TIFF_SUFFIXES", "open_tiff", "read_tiff_image", "write_tiff_series"]

_log = logging.getLogger(__name__)

TIFF_SUFFIXES = (".tif", ".tiff")
_RESUNIT_NM = {tifffile.RESUNIT.CENTIMETER: 1e7, tifffile.RESUNIT.MILLIMETER: 1e6, tifffile.RESUNIT.MICROMETER: 1e3}


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


def _image_shape(path: Path, tif: tifffile.TiffFile) -> tuple[int, ...]:
    """Shape of the first series without singleton axes; colour images are refused."""
    series = tif.series[0]
    if "S" in series.axes and series.shape[series.axes.index("S")] > 1:
        found = f"colour samples (axes {series.axes}, shape {series.shape}; write stacks with photometric='minisblack')"
        raise FileFormatError(path, "image", "grayscale frames", found)
    return tuple(int(s) for s in series.shape if s != 1) or (1, 1)


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _tifffile_warnings(path: Path) -> Iterator[None]:
    """tifffile's warnings about ``path`` held back: added to an error raised in the block, else logged.

    A damaged file makes tifffile log a warning and then fail; the user sees one message naming
    the file instead of two.
    """
    logger = logging.getLogger("tifffile")
    handler, propagate = _Collect(), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    except FileFormatError as e:
        if handler.messages:
            found = f"{e.found} (tifffile: {'; '.join(handler.messages[:3])})"
            raise FileFormatError(e.file, e.field, e.expected, found) from e
        raise
    else:
        for message in handler.messages:
            _log.warning("%s: tifffile: %s", path, message)
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _open(path: Path) -> tifffile.TiffFile:
    size = path.stat().st_size
    if size == 0:
        raise FileFormatError(path, "file", "a TIFF file", "an empty file (0 bytes)")
    with reading(path, "a readable TIFF file"):
        return tifffile.TiffFile(path)


def _data_end(tif: tifffile.TiffFile) -> int:
    """Byte just past the image data of the first series (where a complete file has at least that many)."""
    series = tif.series[0]
    if series.dataoffset is not None:  # contiguous data (ImageJ stacks, uncompressed tifffile writes)
        return int(series.dataoffset) + int(series.nbytes)
    end = 0
    for page in series.pages:
        if page is not None:
            end = max([end] + [int(o) + int(c) for o, c in zip(page.dataoffsets, page.databytecounts)])
    return end


def _inspect(path: Path, ndim: int) -> tuple[tuple[int, ...], str, float | None]:
    """(shape without singleton axes, dtype, pixel size in nm or None) of the first series of ``path``.

    ``ndim`` is 3 for a stack file, 2 for one frame of a folder. A file shorter than its image data
    (a truncated copy) is refused here, before any frame is read; so is one whose image has another
    number of dimensions (with tifffile's warnings, which tell a damaged stack from a 2-D image).
    """
    with _tifffile_warnings(path):
        with _open(path) as tif, reading(path, "a readable TIFF file"):
            if not tif.series:
                raise FileFormatError(path, "image", "at least one image in the TIFF file", "no image series")
            shape = _image_shape(path, tif)
            dtype = str(tif.series[0].dtype)
            pixel = _pixel_nm(path, tif)
            end, size = _data_end(tif), path.stat().st_size
        if end > size:
            raise FileFormatError(path, "data", f"{end} bytes of image data for shape {shape} {dtype}",
                                  f"a truncated file of {size} bytes")
        if ndim == 2 and len(shape) != 2:
            raise FileFormatError(path, "image", "one 2-D frame (Y, X) per file", f"shape {shape}")
        if ndim == 3 and len(shape) != 3:
            found = f"a single 2-D image of shape {shape}" if len(shape) == 2 else f"shape {shape}"
            raise FileFormatError(path, "image", "a 3-D stack of frames (N, Y, X)", found)
    return shape, dtype, pixel


def _pixel_nm(path: Path, tif: tifffile.TiffFile) -> float | None:
    page = tif.pages[0]
    tag = page.tags.get("XResolution")
    if tag is None or not tag.value[0]:
        return None
    per_pixel = tag.value[1] / tag.value[0]  # units per pixel
    unit = (tif.imagej_metadata or {}).get("unit")
    if unit:
        try:
            factor = unit_factor(str(path), "ImageJ unit", "um" if unit in ("micron", "\\u00B5m") else unit, "length")
        except FileFormatError:
            _log.warning("%s: unknown ImageJ unit %r; pixel size ignored", path, unit)
            return None
    else:
        res_tag = page.tags.get("ResolutionUnit")
        factor = _RESUNIT_NM.get(res_tag.value) if res_tag is not None else None
        if factor is None:
            return None
    return float(f"{per_pixel * factor:.7g}")


def _read_image(path: Path, frame_shape: tuple[int, ...], like: str = "") -> np.ndarray:
    """The one image of ``path`` (dtype as stored), checked to have ``frame_shape`` (``like`` another file)."""
    with _tifffile_warnings(path), reading(path, "a readable TIFF file"):
        img = np.squeeze(tifffile.imread(path))
    if img.shape != frame_shape:
        raise FileFormatError(path, "image", f"shape {frame_shape}{like}", f"shape {img.shape}")
    return img


def read_tiff_image(path: Path) -> np.ndarray:
    """The one 2-D frame (Y, X) of a TIFF file, dtype as stored (the folder watcher's frames)."""
    shape, _, _ = _inspect(path, 2)
    return _read_image(path, shape)


def open_tiff(path: Path) -> RawSeries:
    """Read everything but the frames of a TIFF stack (file or folder) and its CSV."""
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES and p.is_file()), key=_natural_key)
        if not files:
            raise FileFormatError(path, "frames", "a folder with *.tif/*.tiff files", "no TIFF files")
        shape, dtype, pixel = _inspect(files[0], 2)
        n = len(files)
        csv = find_beside(path, (".csv",))
        if csv is None:
            inside = sorted(path.glob("*.csv"))
            csv = inside[0] if len(inside) == 1 else None
        where = f"{path.with_suffix('.csv').name} beside the folder or a single *.csv inside it"
    else:
        files = [path]
        shape, dtype, pixel = _inspect(path, 3)
        n = shape[0]
        shape = shape[1:]
        csv = find_beside(path, (".csv",))
        where = f"{path.with_suffix('.csv').name} beside it"
    if csv is None:
        raise FileFormatError(path, "angles", f"a CSV of angle_deg,time_s ({where})", "none")
    label = str(path)
    fields = fields_from_table(label, read_angle_csv(csv), n)
    metadata: dict[str, Any] = {}
    if "csv_settings" in fields:
        metadata["csv_settings"] = fields.pop("csv_settings")
    fields.setdefault("pixel_nm", pixel)
    if "times_s" not in fields:
        fields.update(times_s=np.arange(n, dtype=np.float64), time_source="frame_index",
                      time_detail=f"{csv} has no time_s column")
    frame_shape = (int(shape[0]), int(shape[1]))

    def load_frames() -> np.ndarray:
        if len(files) == 1 and not path.is_dir():
            with _tifffile_warnings(path), reading(path, "a readable TIFF file"):
                frames = tifffile.imread(path)
            if np.size(frames) != n * frame_shape[0] * frame_shape[1]:
                raise FileFormatError(path, "data", f"{n} frames of shape {frame_shape}", f"shape {np.shape(frames)}")
            return np.asarray(frames, dtype=np.float32).reshape(n, *frame_shape)
        out = np.empty((n, *frame_shape), dtype=np.float32)
        for i, f in enumerate(files):
            out[i] = _read_image(f, frame_shape, f" like {files[0].name}")
        return out

    return RawSeries(
        label=f"{label} + {csv.name}",
        format="tiff-folder" if path.is_dir() else "tiff",
        frame_shape=frame_shape,
        dtype=dtype,
        load_frames=load_frames,
        metadata=metadata,
        files=[str(f) for f in files] + [str(csv)],
        **fields,
    )


def write_tiff_series(path: str | Path, series: TiltSeries, *, tilt_axis_angle_deg: float = 0.0,
                      overwrite: bool = False) -> None:
    """Write ``series`` as a multi-page float32 TIFF (ImageJ) + ``<stem>.csv`` beside it."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: refusing to replace an existing file (pass overwrite=True)")
    kwargs: dict[str, Any] = {"metadata": {"axes": "ZYX"}}
    settings: dict[str, object] = {"tilt_axis_angle_deg": repr(float(tilt_axis_angle_deg))}
    if series.pixel_nm is not None:
        kwargs = {"resolution": (1.0 / series.pixel_nm, 1.0 / series.pixel_nm), "metadata": {"axes": "ZYX", "unit": "nm"}}
        settings["pixel_nm"] = repr(float(series.pixel_nm))
    tifffile.imwrite(path, np.ascontiguousarray(series.frames, dtype=np.float32), imagej=True, **kwargs)
    write_angle_csv(path.with_suffix(".csv"), series.angles_deg, series.times_s, exposure_s=series.exposure_s,
                    extra=series.extra, settings=settings)
