"""Read any supported tilt-series file into a :class:`~tiltstream.stream.series.TiltSeries`.

Formats (chosen by content where it can be recognised, else by extension):

* HDF5 (``.h5 .hdf5 .hdf .nx .nxs .nx5``): tiltstream recordings and any NXtomo file
  (:mod:`tiltstream.stream.nxtomo_reader`);
* MRC (``.mrc .mrcs .st .ali .preali .map``) + ``.rawtlt``/``.tlt`` (+ optional ``.csv``) beside it
  (:mod:`tiltstream.stream.mrc`);
* TIFF (``.tif .tiff``) multi-page file, or a folder of TIFF files, + an angle/time CSV
  (:mod:`tiltstream.stream.tiff`);
* SerialEM MRC + ``.mdoc`` (:mod:`tiltstream.stream.serialem`, through the MRC reader);
* Velox ``.emd`` and Gatan ``.dm3 .dm4`` (:mod:`tiltstream.stream.rsciio_reader`).

Frames are brought into the tiltstream convention (tilt axis along the rows, Y) using the
in-plane tilt-axis angle given to :func:`read_series`, else the one found in the file, else 0
(see :mod:`tiltstream.stream.orient`). What was done is recorded in ``metadata``:
``format``, ``files``, ``time_source`` (``"timestamps"``, ``"cumulative_count_time"`` or
``"frame_index"``), ``time_detail``, ``orientation`` and, for NXtomo, ``skipped_frames``.

Every problem with the input raises :class:`FileFormatError` naming the file, the field, what
was expected and what was found.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.orient import orient_frames
from tiltstream.stream.rawseries import RawSeries
from tiltstream.stream.series import ANGLE_RANGE, TiltSeries, angles_out_of_range, real_dtype_problem

__all__ = ["FileFormatError", "read_series", "read_image", "describe", "open_raw", "HDF5_SUFFIXES", "IMAGE_SUFFIXES"]

_log = logging.getLogger(__name__)

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nx", ".nxs", ".nx5")
#: files of one frame each that :func:`read_image` reads
IMAGE_SUFFIXES = (".tif", ".tiff", ".mrc", ".mrcs", ".st")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _sniff(path: Path) -> str | None:
    """Format from the first bytes of the file, or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1024)
    except OSError:
        return None
    if head.startswith(_HDF5_SIGNATURE):
        return "hdf5"
    if len(head) >= 212 and head[208:211] == b"MAP":
        return "mrc"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    return None


def _opener(path: Path) -> Callable[[Path], RawSeries]:
    from tiltstream.stream.mrc import MRC_SUFFIXES, open_mrc
    from tiltstream.stream.nxtomo_reader import open_nxtomo
    from tiltstream.stream.rsciio_reader import RSCIIO_SUFFIXES, open_rsciio
    from tiltstream.stream.tiff import TIFF_SUFFIXES, open_tiff

    openers = {"hdf5": open_nxtomo, "mrc": open_mrc, "tiff": open_tiff}
    if path.is_dir():
        return open_tiff
    if path.suffix.lower() in RSCIIO_SUFFIXES:  # before sniffing: a Velox .emd is an HDF5 file
        return open_rsciio
    kind = _sniff(path)
    if kind is not None:
        return openers[kind]
    suffix = path.suffix.lower()
    for kind, suffixes in (("hdf5", HDF5_SUFFIXES), ("mrc", MRC_SUFFIXES), ("tiff", TIFF_SUFFIXES)):
        if suffix in suffixes:
            return openers[kind]  # not recognised by content: the opener says what is wrong
    known = " ".join(HDF5_SUFFIXES + MRC_SUFFIXES + TIFF_SUFFIXES + RSCIIO_SUFFIXES)
    raise FileFormatError(path, "format", f"one of {known} or a folder of TIFF files", repr(path.suffix or path.name))


def read_image(path: str | os.PathLike) -> np.ndarray:
    """The one 2-D frame (Y, X) in a TIFF or MRC file, dtype as stored (frames of a folder watch).

    Chosen by content, else by extension; every problem raises :class:`FileFormatError`.
    """
    from tiltstream.stream.mrc import MRC_SUFFIXES, read_mrc_image
    from tiltstream.stream.tiff import TIFF_SUFFIXES, read_tiff_image

    p = Path(path)
    if not p.is_file():
        raise FileFormatError(p, "path", "an existing file", "no such file")
    if p.stat().st_size == 0:
        raise FileFormatError(p, "file", "an image file", "an empty file (0 bytes)")
    kind = _sniff(p)
    if kind is None:
        suffix = p.suffix.lower()
        kind = "mrc" if suffix in MRC_SUFFIXES else "tiff" if suffix in TIFF_SUFFIXES else None
    if kind not in ("mrc", "tiff"):
        raise FileFormatError(p, "format", f"a TIFF or MRC image ({' '.join(IMAGE_SUFFIXES)})",
                              kind or repr(p.suffix or p.name))
    reader = read_mrc_image if kind == "mrc" else read_tiff_image
    with reading(p, "a readable image"):
        return reader(p)


def open_raw(path: str | os.PathLike) -> RawSeries:
    """The series in ``path`` with every per-frame field read and checked, frames not yet read."""
    p = Path(path)
    if not p.exists():
        raise FileFormatError(p, "path", "an existing file or folder", "no such file or folder")
    if not (p.is_file() or p.is_dir()):  # a FIFO or a device would block the format check's read
        raise FileFormatError(p, "path", "a regular file or a folder", "a FIFO, socket or device")
    opener = _opener(p)
    with reading(p, "a readable tilt-series file"):  # a net under the format readers' own checks
        raw = opener(p)
    _check_raw(raw)
    return raw


def _check_raw(raw: RawSeries) -> None:
    """The rules of :class:`TiltSeries` that every format shares, checked before the frames are read:
    real pixel values (a complex frame would lose its imaginary part), frames of at least one pixel,
    angles within the wire's range, exposure times >= 0."""
    dtype = real_dtype_problem(raw.dtype)
    if dtype is not None:
        raise FileFormatError(raw.label, "frames", "real pixel values (integer or float)", dtype)
    if 0 in tuple(raw.frame_shape):
        raise FileFormatError(raw.label, "frames", "frames of at least 1×1 pixels", f"frames of shape {tuple(raw.frame_shape)}")
    far = angles_out_of_range(raw.angles_deg)
    if far.size:
        raise FileFormatError(raw.label, "angles", ANGLE_RANGE,
                              f"{raw.angles_deg[far[0]]:g} at frame(s) {far[:10].tolist()}")
    if raw.exposure_s is not None and (np.asarray(raw.exposure_s) < 0).any():
        neg = np.flatnonzero(np.asarray(raw.exposure_s) < 0)
        raise FileFormatError(raw.label, "exposure", "exposure times in s >= 0",
                              f"{raw.exposure_s[neg[0]]:g} at frame(s) {neg[:10].tolist()}")


def read_series(path: str | os.PathLike, *, tilt_axis_angle_deg: float | None = None) -> TiltSeries:
    """Read a tilt series from any supported file and bring it into the tiltstream conventions.

    Parameters
    ----------
    path : file (or folder of TIFF files) to read.
    tilt_axis_angle_deg : in-plane angle of the tilt axis in the stored frames, degrees
        counter-clockwise from the image Y axis (IMOD convention). Overrides the file's value;
        None uses the file's value, or 0 when the file has none.

    Returns
    -------
    TiltSeries with frames (N, Y, U) float32, tilt axis along Y.
    """
    raw = open_raw(path)
    _check_fits_in_memory(raw)
    with reading(raw.label, "readable frames", "frames"):
        frames = raw.load_frames()
    if frames.shape != (raw.n_frames, *raw.frame_shape):
        raise FileFormatError(raw.label, "frames", f"shape {(raw.n_frames, *raw.frame_shape)}", f"shape {frames.shape}")
    angle, angle_source = _tilt_axis(raw, tilt_axis_angle_deg)
    frames, info = orient_frames(frames, angle)
    info["source"] = angle_source
    metadata = {**raw.metadata, "format": raw.format, "files": list(raw.files),
                "time_source": raw.time_source, "time_detail": raw.time_detail, "orientation": info}
    try:
        return TiltSeries(
            frames=frames,
            angles_deg=raw.angles_deg,
            times_s=raw.times_s,
            exposure_s=raw.exposure_s,
            pixel_nm=raw.pixel_nm,
            extra=raw.extra,
            metadata=metadata,
            source=str(path),
        )
    except ValueError as e:  # every field was checked above; this is a safety net
        raise FileFormatError(raw.label, "series", "a consistent tilt series", str(e)) from None


def _check_fits_in_memory(raw: RawSeries) -> None:
    """FileFormatError when the frames the file announces (as float32) exceed the machine's memory:
    a damaged or sparse header, refused before an allocation that would fail."""
    from tiltstream.stream.budget import _physical_memory_bytes  # noqa: PLC0415

    physical = _physical_memory_bytes()
    need = raw.n_frames * raw.frame_shape[0] * raw.frame_shape[1] * 4
    if physical and need > physical:
        raise FileFormatError(raw.label, "frames", f"frames that fit in memory ({physical / 2**30:.1f} GiB here)",
                              f"{raw.n_frames} frames of {raw.frame_shape[0]}×{raw.frame_shape[1]} pixels "
                              f"({need / 2**30:.1f} GiB as float32)")


def _tilt_axis(raw: RawSeries, override: float | None) -> tuple[float, str]:
    if override is not None:
        if not np.isfinite(override):
            raise ValueError(f"tilt_axis_angle_deg: expected a finite angle in degrees, got {override}")
        if raw.tilt_axis_angle_deg is not None and raw.tilt_axis_angle_deg != override:
            _log.info("%s: tilt-axis angle %g deg given; the file says %g deg (%s)", raw.label, override,
                      raw.tilt_axis_angle_deg, raw.tilt_axis_source)
        return float(override), "tilt_axis_angle_deg argument"
    if raw.tilt_axis_angle_deg is not None:
        if not np.isfinite(raw.tilt_axis_angle_deg):
            raise FileFormatError(raw.label, str(raw.tilt_axis_source or "tilt_axis_angle_deg"),
                                  "a finite tilt-axis angle in degrees (or pass --tilt-axis-angle DEG)",
                                  raw.tilt_axis_angle_deg)
        return float(raw.tilt_axis_angle_deg), str(raw.tilt_axis_source)
    return 0.0, "none in the file: assumed 0 (tilt axis along the rows)"


def describe(path: str | os.PathLike, *, tilt_axis_angle_deg: float | None = None) -> dict[str, Any]:
    """Summary of a tilt-series file for ``tiltstream info``, without reading the frames.

    Keys: ``path``, ``format``, ``files``, ``n_frames``, ``frame_shape`` (as stored, (Y, X)),
    ``frame_shape_oriented`` (after orientation), ``dtype``, ``angle_min_deg``, ``angle_max_deg``,
    ``duration_s`` (None when times are frame indices), ``time_source``, ``time_detail``,
    ``exposure_total_s``, ``pixel_nm``, ``tilt_axis_angle_deg``, ``tilt_axis_source``, plus
    ``skipped_frames`` / ``recording_closed`` where they apply.
    """
    raw = open_raw(path)
    angle, angle_source = _tilt_axis(raw, tilt_axis_angle_deg)
    k = int(np.round(angle / 90.0)) % 4
    y, x = raw.frame_shape
    info: dict[str, Any] = {
        "path": str(path),
        "format": raw.format,
        "files": list(raw.files),
        "n_frames": raw.n_frames,
        "frame_shape": (y, x),
        "frame_shape_oriented": (x, y) if k % 2 else (y, x),
        "dtype": raw.dtype,
        "angle_min_deg": float(raw.angles_deg.min()),
        "angle_max_deg": float(raw.angles_deg.max()),
        "duration_s": None if raw.time_source == "frame_index" else float(raw.times_s.max() - raw.times_s.min()),
        "time_source": raw.time_source,
        "time_detail": raw.time_detail,
        "exposure_total_s": None if raw.exposure_s is None else float(raw.exposure_s.sum()),
        "pixel_nm": raw.pixel_nm,
        "tilt_axis_angle_deg": angle,
        "tilt_axis_source": angle_source,
        "extra_fields": sorted(raw.extra),
    }
    for key in ("skipped_frames", "recording_closed"):
        if key in raw.metadata:
            info[key] = raw.metadata[key]
    return info
