"""4D reconstruction results: one writer interface, two formats (HDF5 and OME-Zarr), and their reader.

The format follows the file name: ``*.zarr`` is an OME-Zarr (NGFF) image written by
:mod:`tiltstream.stream.zarr_results` (optional ``[zarr]`` extra), anything else is HDF5.
Both are written one volume at a time (:func:`open_result_writer`), so a reconstruction still
running leaves a readable file holding every volume done so far; :func:`read_result` answers with
those. A slab-parallel reconstruction writes Y-slabs of all volumes instead
(:meth:`ResultWriter.write_rows`): its volumes count as written once every row is in. Both formats
carry the same provenance.

HDF5 result file layout::

    /volumes   (T, Z, Y, X) float32, chunk = one volume (or, written slab by slab, one slab of
               one volume); Y is the tilt axis
    /times_s   (T,) float64, seconds since stream start, @units="s"
    /@format="tiltstream-result/1", @tiltstream_version, @created (ISO 8601, UTC),
     @method, @parameters_json, @input_path, @input_sha256, @voxel_nm (when given),
     @n_written (volumes written so far, in time order; absent in older files: all),
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

__all__ = ["RESULT_FORMAT", "ResultWriter", "chunk_shape", "open_result_writer", "write_result", "read_result", "volume_at",
           "result_voxel_nm", "is_zarr_path", "provenance", "sha256_file"]

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


def is_zarr_path(path: str | os.PathLike) -> bool:
    """True for a ``*.zarr`` name (an OME-Zarr result), False for anything else (HDF5)."""
    return Path(path).suffix.lower() == ".zarr"


def provenance(path: str | os.PathLike, attrs: dict[str, Any]) -> dict[str, Any]:
    """The provenance of a result as plain Python values, the same for every format.

    ``format``, ``tiltstream_version``, ``created`` (ISO 8601, UTC), ``method`` (default
    ``"unknown"``), ``parameters`` (a dict), ``input_path`` and its ``input_sha256`` (computed when
    the input exists and no hash is given), then every other entry of ``attrs`` that is not None.
    """
    extra = dict(attrs)
    out: dict[str, Any] = {
        "format": RESULT_FORMAT,
        "tiltstream_version": tiltstream_version(),
        "created": datetime.now(timezone.utc).isoformat(),
        "method": str(extra.pop("method", "unknown")),
        "parameters": extra.pop("parameters", None) or {},
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
    out.update((k, v) for k, v in extra.items() if v is not None)
    return out


def _check_times(path: str | os.PathLike, times_s: Any, n: int) -> np.ndarray:
    t = np.asarray(times_s, dtype=np.float64)
    if t.shape != (n,):
        raise ValueError(f"{path}: times_s: expected {n} times (one per volume), got shape {t.shape}")
    if not np.isfinite(t).all():
        raise ValueError(f"{path}: times_s: expected finite times, got {t.tolist()}")
    return t


class ResultWriter:
    """Writes a 4-D result one volume at a time, in time order; a context manager.

    Every :meth:`append` is on disk when it returns, and the file says how many volumes it holds
    (``n_written``), so a reader sees a consistent result of the volumes done so far while the
    writer goes on. Made by :func:`open_result_writer`; subclasses implement one format.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], times_s: np.ndarray) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.times_s = np.asarray(times_s, dtype=np.float64)
        self.n_written = 0
        self._rows_done: np.ndarray | None = None  # write_rows: which Y rows are on disk

    def append(self, volume: np.ndarray) -> None:
        """Write the next (Z, Y, X) volume (the one at ``times_s[n_written]``)."""
        if self._rows_done is not None:
            raise ValueError(f"{self.path}: append: this result is being written slab by slab (write_rows)")
        vol = np.asarray(volume)
        if vol.shape != self.shape:
            raise ValueError(f"{self.path}: volume {self.n_written}: expected shape {self.shape}, got {vol.shape}")
        if self.n_written >= len(self.times_s):
            raise ValueError(f"{self.path}: expected at most {len(self.times_s)} volumes (one per time), "
                             f"got volume {self.n_written + 1}")
        self._write(self.n_written, vol.astype(np.float32, copy=False))
        self.n_written += 1

    def write_rows(self, y0: int, block: np.ndarray) -> None:
        """Write rows ``y0 : y0 + R`` of every volume from ``block`` (T, Z, R, X), T = all planned times.

        Slabs may come in any order; the result's volumes count as written (``n_written`` = T) when
        the last row is in, so a reader never sees a volume with rows missing.
        """
        b = np.asarray(block)
        nt, (nz, ny, nx) = len(self.times_s), self.shape
        if b.ndim != 4 or (b.shape[0], b.shape[1], b.shape[3]) != (nt, nz, nx) or not 0 <= y0 <= ny - b.shape[2]:
            raise ValueError(f"{self.path}: rows from {y0}: expected a block (T={nt}, Z={nz}, R, X={nx}) within "
                             f"Y = {ny} rows, got shape {b.shape}")
        if self.n_written and self._rows_done is None:
            raise ValueError(f"{self.path}: write_rows: this result is being written volume by volume (append)")
        if self._rows_done is None:
            self._rows_done = np.zeros(ny, dtype=bool)
        self._write_rows(y0, b.astype(np.float32, copy=False))
        self._rows_done[y0:y0 + b.shape[2]] = True
        if self._rows_done.all() and self.n_written < nt:
            self.n_written = nt
            self._set_written(nt)

    def update_provenance(self, attrs: dict[str, Any]) -> None:
        """Add or replace provenance entries known only at the end (e.g. ``wall_time_s``)."""
        self._update_provenance({k: v for k, v in attrs.items() if v is not None})

    def _update_provenance(self, attrs: dict[str, Any]) -> None:
        raise NotImplementedError

    def _write(self, i: int, volume: np.ndarray) -> None:
        raise NotImplementedError

    def _write_rows(self, y0: int, block: np.ndarray) -> None:
        raise NotImplementedError

    def _set_written(self, n: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Finish the file (it stays readable if the writer is never closed)."""
        if self._rows_done is not None and not self._rows_done.all():
            _log.warning("%s: closed with %d of %d rows written (no volume complete)", self.path,
                         int(self._rows_done.sum()), self.shape[1])
        elif self.n_written < len(self.times_s):
            _log.warning("%s: closed with %d of %d volumes written", self.path, self.n_written, len(self.times_s))
        else:
            _log.info("wrote %d volumes %s to %s", self.n_written, self.shape, self.path)

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HDF5ResultWriter(ResultWriter):
    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], times_s: np.ndarray,
                 prov: dict[str, Any], *, overwrite: bool, chunk_rows: int | None = None) -> None:
        super().__init__(path, shape, times_s)
        self._file = h5py.File(self.path, "w" if overwrite else "w-")
        full = (len(self.times_s), *self.shape)
        chunks = (1, *chunk_shape(self.shape, chunk_rows)) if full[0] and min(self.shape) > 0 else None
        self._volumes = self._file.create_dataset("volumes", shape=full, dtype=np.float32, chunks=chunks)
        self._volumes.attrs["axes"] = "T,Z,Y,X"
        self._file.create_dataset("times_s", data=self.times_s).attrs["units"] = "s"
        self._update_provenance(prov)
        self._set_written(0)

    def _update_provenance(self, attrs: dict[str, Any]) -> None:
        for key, value in attrs.items():
            if isinstance(value, (dict, list, tuple)):
                self._file.attrs[f"{key}_json"] = to_json(value)
            else:
                self._file.attrs[key] = value
        self._file.flush()

    def _write(self, i: int, volume: np.ndarray) -> None:
        self._volumes[i] = volume
        self._set_written(i + 1)

    def _write_rows(self, y0: int, block: np.ndarray) -> None:
        self._volumes[:, :, y0:y0 + block.shape[2]] = block
        self._file.flush()

    def _set_written(self, n: int) -> None:
        self._file.attrs["n_written"] = n
        self._file.flush()

    def close(self) -> None:
        if self._file.id.valid:
            self._file.close()
            super().close()


def chunk_shape(shape: tuple[int, int, int], chunk_rows: int | None) -> tuple[int, int, int]:
    """The (Z, Y, X) chunk of one volume: all of it, or ``chunk_rows`` Y rows (a slab) of it."""
    nz, ny, nx = (max(1, int(s)) for s in shape)
    return (nz, ny if chunk_rows is None else max(1, min(int(chunk_rows), ny)), nx)


def open_result_writer(
    path: str | os.PathLike,
    shape: tuple[int, int, int],
    times_s: np.ndarray,
    *,
    attrs: dict[str, Any],
    overwrite: bool = False,
    chunk_rows: int | None = None,
) -> ResultWriter:
    """A :class:`ResultWriter` for volumes of ``shape`` (Z, Y, X) at ``times_s`` (s since stream start).

    ``*.zarr`` gives an OME-Zarr image (needs the ``[zarr]`` extra), any other name HDF5.
    ``attrs`` is the provenance (see :func:`provenance` and :func:`write_result`). ``chunk_rows``:
    chunks of that many Y rows of one volume instead of whole volumes (for a result written slab
    by slab with :meth:`ResultWriter.write_rows`; the file layout is otherwise the same).
    """
    if len(shape) != 3:
        raise ValueError(f"{path}: shape: expected (Z, Y, X), got {tuple(shape)}")
    t = _check_times(path, times_s, len(np.asarray(times_s).reshape(-1)))
    prov = provenance(path, attrs)
    if is_zarr_path(path):
        from tiltstream.stream.zarr_results import ZarrResultWriter  # noqa: PLC0415 (optional extra)

        return ZarrResultWriter(path, shape, t, prov, overwrite=overwrite, chunk_rows=chunk_rows)
    return _HDF5ResultWriter(path, shape, t, prov, overwrite=overwrite, chunk_rows=chunk_rows)


def write_result(
    path: str | os.PathLike,
    volumes: np.ndarray,
    times_s: np.ndarray,
    *,
    attrs: dict[str, Any],
    overwrite: bool = False,
) -> None:
    """Write a 4D result with its provenance (HDF5, or OME-Zarr for a ``*.zarr`` name).

    Parameters
    ----------
    path : file to create (a folder for ``*.zarr``).
    volumes : (T, Z, Y, X) volumes, stored as float32.
    times_s : (T,) time of each volume, seconds since stream start.
    attrs : provenance: ``method`` (str), ``parameters`` (JSON-serialisable dict, stored as
        ``parameters_json`` in HDF5), ``input_path`` (its SHA-256 is computed unless ``input_sha256`` is
        given), ``voxel_nm``, and any other scalar, string, list or dict attribute.
    overwrite : replace an existing file.
    """
    vol = np.asarray(volumes)
    if vol.ndim != 4:
        raise ValueError(f"{path}: volumes: expected a 4-D array (T, Z, Y, X), got shape {vol.shape}")
    t = _check_times(path, times_s, vol.shape[0])
    with open_result_writer(path, vol.shape[1:], t, attrs=attrs, overwrite=overwrite) as writer:
        for v in vol:
            writer.append(v)


def _decode_attrs(raw: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        elif isinstance(value, np.generic):
            value = value.item()
        if key.endswith("_json") and isinstance(value, str):
            attrs[key[: -len("_json")]] = json.loads(value)
        else:
            attrs[key] = value
    return attrs


def read_result(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(volumes (T, Z, Y, X) float32, times_s (T,), attrs)`` of a result file (HDF5 or OME-Zarr).

    ``attrs`` has the provenance written by :func:`write_result`, with ``parameters`` (and any
    other ``*_json`` attribute) decoded back to Python objects. A result still being written (or
    left by a killed writer) gives the volumes written so far; ``attrs["n_planned"]`` is the number
    of time points it was opened for.
    """
    p = Path(path)
    if not p.exists():
        raise FileFormatError(p, "path", "an existing result file", "no such file")
    if is_zarr_path(p):
        from tiltstream.stream.zarr_results import read_zarr_result  # noqa: PLC0415 (optional extra)

        return read_zarr_result(p)
    from tiltstream.stream.nxtomo_reader import open_h5  # noqa: PLC0415

    with open_h5(p) as f:
        for name in ("volumes", "times_s"):
            if not isinstance(f.get(name), h5py.Dataset):
                raise FileFormatError(p, f"/{name}", "a tiltstream 4-D result dataset", "none")
        if f["volumes"].ndim != 4:
            raise FileFormatError(p, "/volumes", "a 4-D dataset (T, Z, Y, X)", f"shape {f['volumes'].shape}")
        planned = f["volumes"].shape[0]
        n = min(int(f.attrs.get("n_written", planned)), planned)
        volumes = np.asarray(f["volumes"][:n], dtype=np.float32)
        times = np.asarray(f["times_s"][()], dtype=np.float64)
        attrs = _decode_attrs(dict(f.attrs.items()))
    if times.shape != (planned,):
        raise FileFormatError(p, "/times_s", f"{planned} times (one per volume)", f"shape {times.shape}")
    if not np.isfinite(times[:n]).all():
        raise FileFormatError(p, "/times_s", "finite times in s",
                              f"NaN/Inf at volume(s) {np.flatnonzero(~np.isfinite(times[:n]))[:10].tolist()}")
    attrs["n_planned"] = planned
    return volumes, times[:n], attrs


def volume_at(volumes: np.ndarray, times_s: np.ndarray, t_s: float, *,
              interpolate: bool = False) -> tuple[np.ndarray, float]:
    """``(volume (Z, Y, X), time)`` of a result at ``t_s`` (s): the nearest volume in time, or with
    ``interpolate`` the linear blend of the two around ``t_s`` (``time`` is then ``t_s``).

    ``t_s`` must lie within the result's span (a result says nothing outside it).
    """
    t = np.asarray(times_s, dtype=np.float64)
    if len(t) == 0:
        raise ValueError("result is empty: expected at least one volume")
    lo, hi = float(t.min()), float(t.max())
    if not (np.isfinite(t_s) and lo - 1e-9 <= t_s <= hi + 1e-9):
        raise ValueError(f"time: expected t within the result's span [{lo:g}, {hi:g}] s, got {t_s:g} s")
    if not interpolate or len(t) == 1:
        i = int(np.argmin(np.abs(t - t_s)))
        return np.asarray(volumes[i]), float(t[i])
    order = np.argsort(t, kind="stable")
    ts = t[order]
    k = int(np.clip(np.searchsorted(ts, t_s), 1, len(ts) - 1))
    t0, t1 = ts[k - 1], ts[k]
    w = 0.0 if t1 == t0 else (t_s - t0) / (t1 - t0)
    v0, v1 = (np.asarray(volumes[order[j]], dtype=np.float32) for j in (k - 1, k))
    return ((1.0 - w) * v0 + w * v1).astype(np.float32), float(t_s)


def result_voxel_nm(attrs: dict[str, Any]) -> float | None:
    """The voxel edge in nm of a result's ``attrs``, or None when unknown (absent, NaN, not positive)."""
    v = attrs.get("voxel_nm")
    try:
        v = float(v)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) and v > 0 else None

