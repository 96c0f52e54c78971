"""4D reconstruction results (HDF5) and export of single volumes to MRC / TIFF.

Result file layout::

    /volumes   (T, Z, Y, X) float32, chunk = one volume; Y is the tilt axis
    /times_s   (T,) float64, seconds since stream start, @units="s"
    /@format="tiltstream-result/1", @tiltstream_version, @created (ISO 8601, UTC),
     @method, @parameters_json, @input_path, @input_sha256, @voxel_nm (when given),
     and any other scalar/string attribute passed in ``attrs``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiltstream.stream.errors import FileFormatError
from tiltstream.stream.rawseries import tiltstream_version, to_json

__all__ = ["RESULT_FORMAT", "write_result", "read_result", "export_volume", "sha256_file"]

_log = logging.getLogger(__name__)

RESULT_FORMAT = "tiltstream-result/1"


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (a folder: of its files' bytes in sorted name order)."""
    p = Path(path)
    files = sorted(q for q in p.iterdir() if q.is_file()) if p.is_dir() else [p]
    digest = hashlib.sha256()
    for q in files:
        with open(q, "rb") as fh:
            while block := fh.read(chunk_bytes):
                digest.update(block)
    return digest.hexdigest()


def write_result(
    path: str | os.PathLike,
    volumes: np.ndarray,
    times_s: np.ndarray,
    *,
    attrs: dict[str, Any],
    overwrite: bool = False,
) -> None:
    """Write a 4D result with its provenance.

    Parameters
    ----------
    path : HDF5 file to create.
    volumes : (T, Z, Y, X) volumes, stored as float32.
    times_s : (T,) time of each volume, seconds since stream start.
    attrs : provenance: ``method`` (str), ``parameters`` (JSON-serialisable dict, stored as
        ``parameters_json``), ``input_path`` (its SHA-256 is computed unless ``input_sha256`` is
        given), ``voxel_nm``, and any other scalar or string attribute.
    overwrite : replace an existing file.
    """
    vol = np.asarray(volumes)
    t = np.asarray(times_s, dtype=np.float64)
    if vol.ndim != 4:
        raise ValueError(f"{path}: volumes: expected a 4-D array (T, Z, Y, X), got shape {vol.shape}")
    if t.shape != (vol.shape[0],):
        raise ValueError(f"{path}: times_s: expected {vol.shape[0]} times (one per volume), got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"{path}: times_s: expected finite times, got {t.tolist()}")
    extra = dict(attrs)
    out: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "tiltstream_version": tiltstream_version(),
        "created": datetime.now(timezone.utc).isoformat(),
        "method": str(extra.pop("method", "unknown")),
        "parameters_json": to_json(extra.pop("parameters", {})),
    }
    input_path = extra.pop("input_path", None)
    if input_path is not None:
        out["input_path"] = str(input_path)
        sha = extra.pop("input_sha256", None)
        if sha is None and Path(input_path).exists():
            sha = sha256_file(input_path)
        if sha is None:
            _log.warning("%s: input %s not found; no input_sha256 recorded", path, input_path)
        else:
            out["input_sha256"] = sha
    for key, value in extra.items():
        if isinstance(value, (dict, list, tuple)):
            out[f"{key}_json"] = to_json(value)
        elif value is not None:
            out[key] = value
    with h5py.File(path, "w" if overwrite else "w-") as f:
        chunks = (1, *vol.shape[1:]) if vol.shape[0] and min(vol.shape[1:]) > 0 else None
        f.create_dataset("volumes", data=vol.astype(np.float32, copy=False), chunks=chunks)
        f.create_dataset("times_s", data=t).attrs["units"] = "s"
        f["volumes"].attrs["axes"] = "T,Z,Y,X"
        f.attrs.update(out)
    _log.info("wrote %d volumes %s to %s", vol.shape[0], vol.shape[1:], path)


def read_result(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(volumes (T, Z, Y, X) float32, times_s (T,), attrs)`` of a result file.

    ``attrs`` has the provenance written by :func:`write_result`, with ``parameters`` (and any
    other ``*_json`` attribute) decoded back to Python objects.
    """
    from tiltstream.stream.nxtomo_reader import open_h5

    p = Path(path)
    if not p.exists():
        raise FileFormatError(p, "path", "an existing result file", "no such file")
    with open_h5(p) as f:
        for name in ("volumes", "times_s"):
            if not isinstance(f.get(name), h5py.Dataset):
                raise FileFormatError(p, f"/{name}", "a tiltstream 4-D result dataset", "none")
        if f["volumes"].ndim != 4:
            raise FileFormatError(p, "/volumes", "a 4-D dataset (T, Z, Y, X)", f"shape {f['volumes'].shape}")
        volumes = np.asarray(f["volumes"][()], dtype=np.float32)
        times = np.asarray(f["times_s"][()], dtype=np.float64)
        raw_attrs = {k: v for k, v in f.attrs.items()}
    if times.shape != (volumes.shape[0],):
        raise FileFormatError(p, "/times_s", f"{volumes.shape[0]} times (one per volume)", f"shape {times.shape}")
    attrs: dict[str, Any] = {}
    for key, value in raw_attrs.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        if key.endswith("_json") and isinstance(value, str):
            attrs[key[: -len("_json")]] = json.loads(value)
        else:
            attrs[key] = value
    return volumes, times, attrs


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
    if voxel_nm is not None and not (np.isfinite(voxel_nm) and voxel_nm > 0):
        raise ValueError(f"{p}: voxel_nm: expected a positive size in nm, got {voxel_nm}")
    suffix = p.suffix.lower()
    if p.exists() and not overwrite:
        raise FileExistsError(f"{p}: refusing to replace an existing file (pass overwrite=True)")
    if suffix in (".mrc", ".map", ".rec"):
        import mrcfile

        with mrcfile.new(p, overwrite=True) as m:
            m.set_data(vol)
            m.set_volume()
            if voxel_nm is not None:
                m.voxel_size = voxel_nm * 10.0
    elif suffix in (".tif", ".tiff"):
        import tifffile

        kwargs: dict[str, Any] = {"metadata": {"axes": "ZYX"}}
        if voxel_nm is not None:
            kwargs = {"resolution": (1.0 / voxel_nm, 1.0 / voxel_nm),
                      "metadata": {"axes": "ZYX", "unit": "nm", "spacing": voxel_nm}}
        tifffile.imwrite(p, vol, imagej=True, **kwargs)
    else:
        raise FileFormatError(p, "format", "a .mrc, .map, .rec, .tif or .tiff file name", repr(p.suffix or p.name))
    _log.info("exported volume %s to %s", vol.shape, p)
