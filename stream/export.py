"""Export of results for other tools: MRC (tomviz, IMOD), ImageJ-hyperstack TIFF (ImageJ/Fiji,
napari), OME-Zarr (napari, any NGFF viewer). Slice movies are made by :mod:`tiltstream.viz.export`.

:func:`export_volume` writes one (Z, Y, X) volume; :func:`export_result` picks from a 4-D result
file (HDF5 or OME-Zarr) the volume at a time (``time_s``, nearest or interpolated, see
:func:`~tiltstream.stream.results.volume_at`) or, for TIFF and zarr, all of them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.stream.errors import FileFormatError
from tiltstream.stream.results import read_result, result_voxel_nm, volume_at, write_result

__all__ = ["EXPORT_FORMATS", "export_volume", "export_tiff_series", "export_result", "Exported", "format_of"]

_log = logging.getLogger(__name__)

#: export format -> file name suffixes it is known by (the first one is the default)
EXPORT_FORMATS: dict[str, tuple[str, ...]] = {
    "mrc": (".mrc", ".map", ".rec"),
    "tiff": (".tif", ".tiff"),
    "zarr": (".zarr",),
}
#: provenance keys a format writes itself (not carried from the exported result)
_OWN_KEYS = ("format", "tiltstream_version", "created", "n_written", "n_planned")


def format_of(path: str | os.PathLike) -> str:
    """The export format of a file name by its suffix (see :data:`EXPORT_FORMATS`)."""
    p = Path(path)
    for name, suffixes in EXPORT_FORMATS.items():
        if p.suffix.lower() in suffixes:
            return name
    known = ", ".join(s for suffixes in EXPORT_FORMATS.values() for s in suffixes)
    raise FileFormatError(p, "format", f"a {known} file name", repr(p.suffix or p.name))


def _check_voxel(p: Path, voxel_nm: float | None) -> None:
    if voxel_nm is not None and not (np.isfinite(voxel_nm) and voxel_nm > 0):
        raise ValueError(f"{p}: voxel_nm: expected a positive size in nm, got {voxel_nm}")


def _refuse_existing(p: Path, overwrite: bool) -> None:
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p}: refusing to replace an existing file (pass overwrite=True)")


def _imagej_tiff(p: Path, data: np.ndarray, axes: str, voxel_nm: float | None, **extra: Any) -> None:
    import tifffile  # noqa: PLC0415

    metadata: dict[str, Any] = {"axes": axes, **extra}
    kwargs: dict[str, Any] = {}
    if voxel_nm is not None:
        metadata |= {"unit": "nm", "spacing": voxel_nm}
        kwargs["resolution"] = (1.0 / voxel_nm, 1.0 / voxel_nm)
    tifffile.imwrite(p, data, imagej=True, metadata=metadata, **kwargs)


def export_volume(path: str | os.PathLike, volume: np.ndarray, *, voxel_nm: float | None = None,
                  overwrite: bool = False) -> None:
    """Write one (Z, Y, X) volume to ``.mrc`` or ``.tif``/``.tiff`` (by extension) for other viewers.

    MRC gets the voxel size in Å in its header; TIFF is an ImageJ hyperstack (axes ZYX) with the
    voxel size in nm as resolution and spacing.
    """
    p = Path(path)
    vol = np.ascontiguousarray(volume, dtype=np.float32)
    if vol.ndim != 3:
        raise ValueError(f"{p}: volume: expected a 3-D array (Z, Y, X), got shape {vol.shape}")
    _check_voxel(p, voxel_nm)
    suffix = p.suffix.lower()
    if suffix not in EXPORT_FORMATS["mrc"] + EXPORT_FORMATS["tiff"]:
        raise FileFormatError(p, "format", "a .mrc, .map, .rec, .tif or .tiff file name", repr(p.suffix or p.name))
    _refuse_existing(p, overwrite)
    if suffix in EXPORT_FORMATS["mrc"]:
        import mrcfile  # noqa: PLC0415

        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(vol)
            m.set_volume()
            if voxel_nm is not None:
                m.voxel_size = voxel_nm * 10.0
    else:
        _imagej_tiff(p, vol, "ZYX", voxel_nm)
    _log.info("exported volume %s to %s", vol.shape, p)


def export_tiff_series(path: str | os.PathLike, volumes: np.ndarray, times_s: np.ndarray, *,
                       voxel_nm: float | None = None, overwrite: bool = False) -> None:
    """Write (T, Z, Y, X) volumes as one ImageJ hyperstack TIFF (axes TZYX): the voxel size in nm as
    resolution and spacing, the mean time step in s as the frame interval (``finterval``)."""
    p = Path(path)
    vol = np.ascontiguousarray(volumes, dtype=np.float32)
    if vol.ndim != 4:
        raise ValueError(f"{p}: volumes: expected a 4-D array (T, Z, Y, X), got shape {vol.shape}")
    t = np.asarray(times_s, dtype=np.float64)
    _check_voxel(p, voxel_nm)
    _refuse_existing(p, overwrite)
    extra = {"finterval": float((t[-1] - t[0]) / (len(t) - 1))} if len(t) > 1 and t[-1] > t[0] else {}
    _imagej_tiff(p, vol, "TZYX", voxel_nm, **extra)
    _log.info("exported %d volumes %s to %s", vol.shape[0], vol.shape[1:], p)


@dataclass(frozen=True)
class Exported:
    """What :func:`export_result` wrote: the file, its format, and the times (s) of its volumes."""

    path: Path
    format: str
    times_s: tuple[float, ...]
    interpolated: bool = False


def export_result(
    result: str | os.PathLike,
    out: str | os.PathLike,
    *,
    to: str | None = None,
    time_s: float | None = None,
    interpolate: bool = False,
    overwrite: bool = False,
) -> Exported:
    """Export a 4-D result file (HDF5 or OME-Zarr) to ``out`` as ``to`` (default: by ``out``'s suffix).

    ``time_s`` picks one volume: the nearest in time, or with ``interpolate`` the linear blend at
    ``time_s``. Without it, TIFF (a TZYX hyperstack) and zarr get every volume, and MRC (one volume)
    the last one. The zarr copy carries the result's provenance, with ``exported_from``.
    """
    fmt = to or format_of(out)
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"export format: expected one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    out = Path(out)
    volumes, times, attrs = read_result(result)
    if len(times) == 0:
        raise ValueError(f"{result}: expected at least one volume to export, got none")
    voxel = result_voxel_nm(attrs)
    if time_s is not None:
        vol, t = volume_at(volumes, times, float(time_s), interpolate=interpolate)
        volumes, times = vol[None], np.array([t])
    elif fmt == "mrc":
        volumes, times = volumes[-1:], times[-1:]
        _log.info("%s: no time given: exporting the last volume (t = %g s) to MRC", result, times[0])
    if fmt == "zarr":
        carried = {k: v for k, v in attrs.items() if k not in _OWN_KEYS} | {"exported_from": str(result)}
        write_result(out, volumes, times, attrs=carried, overwrite=overwrite)
    elif fmt == "tiff" and time_s is None:
        export_tiff_series(out, volumes, times, voxel_nm=voxel, overwrite=overwrite)
    else:
        export_volume(out, volumes[0], voxel_nm=voxel, overwrite=overwrite)
    return Exported(out, fmt, tuple(float(t) for t in times), interpolated=time_s is not None and interpolate)
