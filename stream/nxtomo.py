"""tiltstream recordings: NXtomo HDF5 files appended frame by frame.

Layout (NXtomo 2.1 as the ``nxtomo`` package writes it, plus clearly named tiltstream fields)::

    /entry                                   NXentry, @definition="NXtomo", @version=2.1
      definition                             "NXtomo"
      start_time                             ISO 8601 time the file was created
      instrument/detector                    NXdetector
        data          (N, Y, U)              frames, chunk = one frame; rows along the tilt axis
        image_key     (N,) int64             0 projection, 1 flat, 2 dark
        count_time    (N,) float64 @units=s  exposure (NaN where unknown)
        mid_exposure_time_s (N,) @units=s    mid-exposure time, s since stream start
        x_pixel_size, y_pixel_size @units=m  sample-plane pixel size (only when known)
      sample                                 NXsample
        rotation_angle (N,) @units=degree    tilt angle
        x_pixel_size, y_pixel_size @units=m  same pixel size
      data                                   NXdata, soft links to data, rotation_angle, image_key
      frame_info                             NXcollection: one (N,) or (N, k) float64 dataset per
                                             extra header field (dose_e_per_A2, temperature_C,
                                             stage_xyz, ...), NaN where a frame did not carry it
      tiltstream                             NXcollection
        @format="tiltstream-recording/1", @tiltstream_version, @metadata_json,
        @tilt_axis_angle_deg (IMOD convention, see tiltstream.stream.orient)
        closed        scalar int8            1 once the writer closed the file cleanly

The file is written with HDF5 SWMR (``libver="latest"``): readers may open it while it grows
(``h5py.File(path, "r", libver="latest", swmr=True)``; :func:`~tiltstream.stream.readers.read_series`,
``silx`` and ``nxtomo`` do this by themselves), and after every appended frame the file is flushed,
so a writer killed at any moment leaves every frame whose ``append`` returned. A file left by a
killed writer keeps its "open for write" flag: plain ``h5py.File(path, "r")`` refuses it, SWMR
readers do not; :func:`repair_recording` rewrites it as a normal file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiltstream.stream.rawseries import tiltstream_version, to_json
from tiltstream.stream.series import TiltSeries

__all__ = ["NXtomoWriter", "write_series", "repair_recording", "RECORDING_FORMAT", "units_for_field"]

_log = logging.getLogger(__name__)

RECORDING_FORMAT = "tiltstream-recording/1"
NXTOMO_VERSION = 2.1
DET = "entry/instrument/detector"
SAMPLE = "entry/sample"
FRAME_INFO = "entry/frame_info"
TS_GROUP = "entry/tiltstream"
TIME_NAME = "mid_exposure_time_s"

_SUFFIX_UNITS = (
    ("_e_per_A2", "e/Angstrom^2"),
    ("_e_per_A2_s", "e/Angstrom^2/s"),
    ("_deg", "degree"),
    ("_nm", "nm"),
    ("_um", "um"),
    ("_mm", "mm"),
    ("_s", "s"),
    ("_C", "degC"),
    ("_K", "K"),
    ("_Pa", "Pa"),
    ("_V", "V"),
    ("_A", "A"),
)


def units_for_field(name: str) -> str | None:
    """NeXus-style unit string implied by a field name's unit suffix (``temperature_C`` -> ``degC``)."""
    for suffix, unit in sorted(_SUFFIX_UNITS, key=lambda su: -len(su[0])):
        if name.endswith(suffix):
            return unit
    return None


def _normalise_extra_fields(extra_fields: Mapping[str, Any] | Iterable[str] | None) -> dict[str, tuple[int, ...]]:
    if extra_fields is None:
        return {}
    if isinstance(extra_fields, Mapping):
        return {str(k): _item_shape(v) for k, v in extra_fields.items()}
    return {str(k): () for k in extra_fields}


def _item_shape(v: Any) -> tuple[int, ...]:
    if v is None:
        return ()
    if isinstance(v, (int, np.integer)):
        return (int(v),)
    return tuple(int(s) for s in v)


class NXtomoWriter:
    """Append frames to an NXtomo recording, flushed after every frame.

    Parameters
    ----------
    path : file to create (refuses to replace an existing file unless ``overwrite``).
    frame_shape : (Y, U) of every frame, in pixels.
    dtype : stored frame dtype.
    pixel_nm : sample-plane pixel size in nm, or None.
    metadata : free-form JSON-serialisable experiment metadata, stored as a JSON attribute.
    extra_fields : per-frame header fields to record besides angle/time/exposure: a mapping
        name -> per-frame shape (``{"dose_e_per_A2": (), "stage_xyz": (3,)}``) or a list of names
        of scalar fields. Stored as float64; a frame without a field gets NaN. In SWMR mode these
        must be declared here (HDF5 cannot add datasets to a SWMR file); undeclared fields passed
        to :meth:`append` are then dropped with a warning, the frame itself is always written.
    tilt_axis_angle_deg : in-plane angle of the tilt axis in the stored frames (IMOD convention,
        see :mod:`tiltstream.stream.orient`); 0 when frames already follow the convention.
    overwrite : replace an existing file.
    swmr : write in HDF5 SWMR mode so that readers can follow the file while it grows.

    Use as a context manager; :meth:`close` marks the recording as closed cleanly.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        frame_shape: tuple[int, int],
        dtype: np.dtype | type | str = np.float32,
        pixel_nm: float | None = None,
        metadata: Mapping[str, Any] | None = None,
        extra_fields: Mapping[str, Any] | Iterable[str] | None = None,
        tilt_axis_angle_deg: float = 0.0,
        overwrite: bool = False,
        swmr: bool = True,
    ) -> None:
        self.path = Path(path)
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        if min(self.frame_shape) < 1 or len(tuple(frame_shape)) != 2:
            raise ValueError(f"{self.path}: frame_shape: expected (Y, U) with both >= 1, got {tuple(frame_shape)}")
        self.dtype = np.dtype(dtype)
        if pixel_nm is not None and not (np.isfinite(pixel_nm) and pixel_nm > 0):
            raise ValueError(f"{self.path}: pixel_nm: expected a positive size in nm, got {pixel_nm}")
        if not np.isfinite(tilt_axis_angle_deg):
            raise ValueError(f"{self.path}: tilt_axis_angle_deg: expected a finite angle, got {tilt_axis_angle_deg}")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path}: refusing to replace an existing file (pass overwrite=True)")
        self._extra = _normalise_extra_fields(extra_fields)
        self._warned: set[str] = set()
        self._n = 0
        self._swmr = bool(swmr)
        metadata_json = to_json(dict(metadata or {}))
        self._f: h5py.File | None = h5py.File(self.path, "w", libver="latest")
        try:
            self._create_layout(pixel_nm, metadata_json, float(tilt_axis_angle_deg))
            if self._swmr:
                self._f.swmr_mode = True
            self._f.flush()
        except BaseException:
            self._f.close()
            self._f = None
            raise
        _log.info("recording to %s (frames %s %s, SWMR=%s)", self.path, self.frame_shape, self.dtype, self._swmr)

    # ------------------------------------------------------------------ layout
    def _per_frame(self, path: str, item_shape: tuple[int, ...], dtype: Any, **attrs: Any) -> h5py.Dataset:
        chunk_n = 1 if path.endswith("/data") else 256
        ds = self._f.create_dataset(
            path, shape=(0, *item_shape), maxshape=(None, *item_shape), chunks=(chunk_n, *item_shape), dtype=dtype
        )
        ds.attrs.update(attrs)
        return ds

    def _create_layout(self, pixel_nm: float | None, metadata_json: str, tilt_axis_angle_deg: float) -> None:
        f = self._f
        entry = f.create_group("entry")
        entry.attrs.update({"NX_class": "NXentry", "definition": "NXtomo", "version": NXTOMO_VERSION, "default": "data"})
        entry["definition"] = "NXtomo"
        entry["start_time"] = datetime.now(timezone.utc).isoformat()
        f.create_group("entry/instrument").attrs["NX_class"] = "NXinstrument"
        f.create_group(DET).attrs["NX_class"] = "NXdetector"
        f.create_group(SAMPLE).attrs["NX_class"] = "NXsample"
        self._data = self._per_frame(f"{DET}/data", self.frame_shape, self.dtype, interpretation="image")
        self._key = self._per_frame(f"{DET}/image_key", (), np.int64)
        self._count = self._per_frame(f"{DET}/count_time", (), np.float64, units="s")
        self._time = self._per_frame(
            f"{DET}/{TIME_NAME}", (), np.float64, units="s",
            doc="mid-exposure time of each frame in seconds since the start of the stream (tiltstream)",
        )
        self._angle = self._per_frame(f"{SAMPLE}/rotation_angle", (), np.float64, units="degree")
        if pixel_nm is not None:
            for grp in (DET, SAMPLE):
                for axis in ("x", "y"):
                    f.create_dataset(f"{grp}/{axis}_pixel_size", data=float(pixel_nm) * 1e-9).attrs["units"] = "m"
            f[f"{DET}/x_pixel_size"].attrs["doc"] = "sample-plane pixel size (tiltstream)"
        nxdata = f.create_group("entry/data")
        nxdata.attrs.update({"NX_class": "NXdata", "signal": "data"})
        nxdata["data"] = h5py.SoftLink(f"/{DET}/data")
        nxdata["rotation_angle"] = h5py.SoftLink(f"/{SAMPLE}/rotation_angle")
        nxdata["image_key"] = h5py.SoftLink(f"/{DET}/image_key")
        f.create_group(FRAME_INFO).attrs["NX_class"] = "NXcollection"
        self._extra_ds: dict[str, h5py.Dataset] = {}
        for name, shape in self._extra.items():
            self._add_extra(name, shape)
        ts = f.create_group(TS_GROUP)
        ts.attrs.update({
            "NX_class": "NXcollection",
            "format": RECORDING_FORMAT,
            "tiltstream_version": tiltstream_version(),
            "metadata_json": metadata_json,
            "tilt_axis_angle_deg": tilt_axis_angle_deg,
        })
        ts.create_dataset("closed", data=np.int8(0))

    def _add_extra(self, name: str, shape: tuple[int, ...]) -> None:
        if "/" in name or not name:
            raise ValueError(f"{self.path}: extra field name: expected a plain name, got {name!r}")
        unit = units_for_field(name)
        ds = self._per_frame(f"{FRAME_INFO}/{name}", shape, np.float64, **({"units": unit} if unit else {}))
        if self._n:
            ds.resize(self._n, axis=0)
            ds[:] = np.nan
        self._extra_ds[name] = ds
        self._extra[name] = shape

    # ------------------------------------------------------------------ writing
    def append(
        self,
        frame: np.ndarray,
        *,
        angle_deg: float,
        t_s: float,
        exposure_s: float | None = None,
        image_key: int = 0,
        **extra: Any,
    ) -> int:
        """Append one frame and flush; return the number of frames now in the file.

        Parameters
        ----------
        frame : (Y, U) array, cast to the file's dtype.
        angle_deg : tilt angle in degrees.
        t_s : mid-exposure time in seconds since stream start.
        exposure_s : exposure (count) time in seconds, or None (stored as NaN).
        image_key : 0 projection, 1 flat field, 2 dark field.
        extra : per-frame header fields (scalars or small vectors), see ``extra_fields``.
        """
        if self._f is None:
            raise ValueError(f"{self.path}: append: expected an open writer, got a closed one")
        arr = np.asarray(frame)
        if arr.shape != self.frame_shape:
            raise ValueError(f"{self.path}: frame: expected shape {self.frame_shape}, got {arr.shape}")
        for name, value in (("angle_deg", angle_deg), ("t_s", t_s)):
            if value is None or not np.isfinite(value):
                raise ValueError(f"{self.path}: {name}: expected a finite number, got {value}")
        if image_key not in (0, 1, 2):
            raise ValueError(f"{self.path}: image_key: expected 0 (projection), 1 (flat) or 2 (dark), got {image_key}")
        values: list[tuple[h5py.Dataset, Any]] = []
        for name, value in extra.items():
            if name not in self._extra_ds:
                if self._swmr:
                    if name not in self._warned:
                        _log.warning("%s: extra field %r was not declared in extra_fields; dropped (SWMR file)",
                                     self.path, name)
                        self._warned.add(name)
                    continue
                self._add_extra(name, np.shape(value))
            ds = self._extra_ds[name]
            v = np.asarray(np.nan if value is None else value, dtype=np.float64)
            if v.shape != ds.shape[1:]:
                raise ValueError(f"{self.path}: {name}: expected shape {ds.shape[1:]} per frame, got {v.shape}")
            values.append((ds, v))
        values += [(ds, np.nan) for name, ds in self._extra_ds.items() if name not in extra]
        values += [
            (self._key, int(image_key)),
            (self._angle, float(angle_deg)),
            (self._time, float(t_s)),
            (self._count, np.nan if exposure_s is None else float(exposure_s)),
            (self._data, arr.astype(self.dtype, copy=False)),  # last: a frame implies its fields
        ]
        n = self._n
        for ds, v in values:
            ds.resize(n + 1, axis=0)
            ds[n] = v
        self._f.flush()
        self._n = n + 1
        return self._n

    def close(self) -> None:
        """Mark the recording closed cleanly, flush and close the file (idempotent)."""
        if self._f is None:
            return
        try:
            self._f[f"{TS_GROUP}/closed"][()] = np.int8(1)
            self._f.flush()
        finally:
            self._f.close()
            self._f = None
        _log.info("closed recording %s with %d frames", self.path, self._n)

    def __enter__(self) -> "NXtomoWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_series(path: str | os.PathLike, series: TiltSeries, *, overwrite: bool = False) -> None:
    """Write a whole :class:`TiltSeries` as a tiltstream recording (frames already in convention)."""
    extra = {k: np.asarray(v) for k, v in series.extra.items()}
    with NXtomoWriter(
        path,
        frame_shape=series.frame_shape,
        dtype=np.float32,
        pixel_nm=series.pixel_nm,
        metadata=series.metadata,
        extra_fields={k: v.shape[1:] for k, v in extra.items()},
        overwrite=overwrite,
        swmr=False,
    ) as w:
        for i in range(series.n_frames):
            w.append(
                series.frames[i],
                angle_deg=float(series.angles_deg[i]),
                t_s=float(series.times_s[i]),
                exposure_s=None if series.exposure_s is None else float(series.exposure_s[i]),
                **{k: v[i] for k, v in extra.items()},
            )


def repair_recording(path: str | os.PathLike, out: str | os.PathLike) -> int:
    """Copy a recording left open by a killed writer to ``out`` as a normally closed HDF5 file.

    Everything readable through SWMR is copied (all groups, datasets and attributes); per-frame
    datasets are cut to the frames that are complete. Returns the number of frames kept.
    """
    from tiltstream.stream.nxtomo_reader import open_h5, recording_frame_count

    with open_h5(Path(path)) as src, h5py.File(out, "w-") as dst:
        n = recording_frame_count(src)
        for key in src:
            src.copy(src[key], dst, name=key, expand_soft=False)
        per_frame = [name for name, obj in _walk(dst) if isinstance(obj, h5py.Dataset) and obj.maxshape[:1] == (None,)]
        for name in per_frame:
            dst[name].resize(n, axis=0)
        dst[f"{TS_GROUP}/closed"][()] = np.int8(1)
        dst[TS_GROUP].attrs["repaired_from"] = str(path)
    _log.info("repaired %s -> %s (%d frames)", path, out, n)
    return n


def _walk(group: h5py.Group) -> list[tuple[str, Any]]:
    items: list[tuple[str, Any]] = []
    group.visititems(lambda name, obj: items.append((name, obj)))
    return items
