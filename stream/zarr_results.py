"""4D results as OME-Zarr (NGFF 0.5 on zarr v3, as ``ome-zarr`` writes it): the ``[zarr]`` extra.

Layout of ``result.zarr``::

    zarr.json   group; attributes "ome" (NGFF multiscales: one level, axes t, z, y, x with units
                second and nanometer, scale [dt, voxel, voxel, voxel] and translation [t0, 0, 0, 0])
                and "tiltstream" (the provenance of :func:`tiltstream.stream.results.provenance`,
                plus "times_s": every planned time and "n_written": volumes written so far)
    0/          the (T, Z, Y, X) float32 array, one chunk per time point (written slab by slab: per
                slab of rows of one time point); not yet written: NaN

The NGFF time axis is regular (first time and mean step); the exact times are in
``tiltstream.times_s``. Every volume is written as soon as it is done and ``n_written`` is raised
after its chunk is on disk, so napari (napari-ome-zarr) or :func:`read_zarr_result` can open a
result whose reconstruction is still running. Without a known voxel size the spatial axes carry no
unit and a scale of 1 (voxels).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.stream.errors import FileFormatError
from tiltstream.stream.results import ResultWriter, chunk_shape, result_voxel_nm

__all__ = ["ZarrResultWriter", "read_zarr_result", "require_zarr", "ngff_axes", "ngff_transforms", "INSTALL_HINT"]

INSTALL_HINT = "OME-Zarr results need the [zarr] extra: pip install 'tiltstream[zarr]'"
_ARRAY = "0"


def require_zarr() -> Any:
    """The ``zarr`` module, after checking that ``ome-zarr`` is there too; else RuntimeError with the install hint."""
    try:
        import ome_zarr.writer  # noqa: F401, PLC0415
        import zarr  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError(f"{INSTALL_HINT} ({exc})") from exc
    return zarr


def ngff_axes(voxel_nm: float | None) -> list[dict[str, str]]:
    """NGFF axes t, z, y, x: time in seconds; space in nanometers when the voxel size is known."""
    space = [{"name": n, "type": "space"} | ({"unit": "nanometer"} if voxel_nm else {}) for n in "zyx"]
    return [{"name": "t", "type": "time", "unit": "second"}, *space]


def ngff_transforms(times_s: np.ndarray, voxel_nm: float | None) -> list[dict[str, Any]]:
    """NGFF scale and translation of the (T, Z, Y, X) array: mean time step (1 s for a single time)
    and the voxel size (1 when unknown); the first time as the translation in t."""
    t = np.asarray(times_s, dtype=np.float64)
    dt = float((t[-1] - t[0]) / (len(t) - 1)) if len(t) > 1 and t[-1] > t[0] else 1.0
    v = float(voxel_nm) if voxel_nm else 1.0
    t0 = float(t[0]) if len(t) else 0.0
    return [{"type": "scale", "scale": [dt, v, v, v]}, {"type": "translation", "translation": [t0, 0.0, 0.0, 0.0]}]


def _json_safe(value: Any) -> Any:
    """``value`` with numpy types made plain and non-finite floats dropped (None); JSON has no NaN."""
    if isinstance(value, dict):
        return {str(k): v for k, v in ((k, _json_safe(v)) for k, v in value.items()) if v is not None}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


class ZarrResultWriter(ResultWriter):
    """:class:`~tiltstream.stream.results.ResultWriter` of an OME-Zarr result (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], times_s: np.ndarray,
                 prov: dict[str, Any], *, overwrite: bool, chunk_rows: int | None = None) -> None:
        super().__init__(path, shape, times_s)
        zarr = require_zarr()
        from ome_zarr.writer import write_multiscales_metadata  # noqa: PLC0415

        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: refusing to replace an existing result (pass overwrite=True)")
        voxel = result_voxel_nm(prov)
        self._group = zarr.open_group(str(self.path), mode="w", zarr_format=3)
        n = len(self.times_s)
        self._array = self._group.create_array(
            _ARRAY, shape=(n, *self.shape), chunks=(1, *chunk_shape(self.shape, chunk_rows)), dtype="float32",
            fill_value=float("nan"), dimension_names=("t", "z", "y", "x"))
        write_multiscales_metadata(
            self._group, [{"path": _ARRAY, "coordinateTransformations": ngff_transforms(self.times_s, voxel)}],
            axes=ngff_axes(voxel), name=self.path.stem)
        self._meta = _json_safe(prov) | {"times_s": self.times_s.tolist()}
        self._set_written(0)

    def _set_written(self, n: int) -> None:
        self._group.attrs["tiltstream"] = self._meta | {"n_written": n}

    def _update_provenance(self, attrs: dict[str, Any]) -> None:
        self._meta |= _json_safe(attrs)
        self._set_written(self.n_written)

    def _write(self, i: int, volume: np.ndarray) -> None:
        self._array[i] = volume
        self._set_written(i + 1)

    def _write_rows(self, y0: int, block: np.ndarray) -> None:
        self._array[:, :, y0:y0 + block.shape[2]] = block


def read_zarr_result(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(volumes (T, Z, Y, X) float32, times_s (T,), attrs)`` of an OME-Zarr result: the volumes
    written so far (see :func:`tiltstream.stream.results.read_result`)."""
    zarr = require_zarr()
    p = Path(path)
    try:
        group = zarr.open_group(str(p), mode="r")
    except Exception as exc:  # noqa: BLE001 - zarr raises several kinds for a folder that is no group
        raise FileFormatError(p, "file", "a zarr group", f"{type(exc).__name__}: {exc}") from exc
    meta = dict(group.attrs.get("tiltstream") or {})
    if "times_s" not in meta:
        raise FileFormatError(p, "attributes/tiltstream", "a tiltstream 4-D result (times_s, provenance)",
                              "none" if not meta else f"keys {sorted(meta)}")
    if _ARRAY not in group:
        raise FileFormatError(p, f"/{_ARRAY}", "the (T, Z, Y, X) array of the result", "none")
    array = group[_ARRAY]
    times = np.asarray(meta.pop("times_s"), dtype=np.float64)
    if array.ndim != 4 or times.shape != (array.shape[0],):
        raise FileFormatError(p, f"/{_ARRAY}", f"a 4-D array (T, Z, Y, X) with T = {len(times)} times",
                              f"shape {array.shape}")
    n = min(int(meta.get("n_written", len(times))), len(times))
    volumes = np.asarray(array[:n], dtype=np.float32)
    meta["n_planned"] = len(times)
    return volumes, times[:n], meta
