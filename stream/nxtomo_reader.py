"""Read tiltstream recordings and any NXtomo file (e.g. written by the ``nxtomo`` package).

Only projections (``image_key == 0``) become the tilt series; dark (2), flat (1) and invalid (3)
frames are skipped and counted in ``metadata["skipped_frames"]``.

Frame times, first that applies (``metadata["time_source"]``):

1. ``"timestamps"``: the recording's ``instrument/detector/mid_exposure_time_s``; or the NXdetector
   per-frame ``instrument/detector/start_time`` (+ half the ``count_time``, or the middle of
   ``start_time``..``stop_time``), counted from the first frame's start;
2. ``"cumulative_count_time"``: back-to-back exposures over all frames in file order (darks and
   flats included, dead time ignored): ``t_i = sum_{j<i} c_j + c_i / 2``;
3. ``"frame_index"``: 0, 1, 2, ... over the projections (not seconds).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.nxtomo import RECORDING_FORMAT, TIME_NAME
from tiltstream.stream.rawseries import RawSeries, check_per_frame, times_from_count_time, unit_factor

__all__ = ["open_h5", "open_nxtomo", "recording_frame_count"]

_log = logging.getLogger(__name__)

_KEY_NAMES = {0: "projection", 1: "flat", 2: "dark", 3: "invalid"}


def open_h5(path: Path) -> h5py.File:
    """Open an HDF5 file read-only; files being written (or left by a killed writer) via SWMR."""
    size = path.stat().st_size
    if size == 0:
        raise FileFormatError(path, "file", "an HDF5 file", "an empty file (0 bytes)")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        plain = str(e)
    except Exception as e:  # noqa: BLE001 (h5py reports a damaged superblock as RuntimeError, ...)
        raise FileFormatError(path, "file", "a readable HDF5 file", f"{type(e).__name__}: {e}") from e
    if "truncated" in plain:  # never retry these with SWMR: HDF5 may abort the process
        raise FileFormatError(path, "file", "a complete HDF5 file", f"a truncated file of {size} bytes ({plain})")
    if "open for write" not in plain and "lock" not in plain:
        raise FileFormatError(path, "file", "a readable HDF5 file", plain)
    try:  # being written by a SWMR writer, or left behind by one that was killed
        return h5py.File(path, "r", libver="latest", swmr=True)
    except OSError as e:
        raise FileFormatError(path, "file", "a readable HDF5 file", f"{plain}; with SWMR: {e}") from None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _is_nxtomo(group: h5py.Group) -> bool:
    if _text(group.attrs.get("definition", "")).lower() == "nxtomo":
        return True
    d = group.get("definition")
    if isinstance(d, h5py.Dataset) and _text(d[()]).lower() == "nxtomo":
        return True
    return _text(group.attrs.get("NX_class", "")) == "NXentry" and "instrument/detector/data" in group


def _find_entry(f: h5py.File, label: str) -> str:
    names = sorted(k for k in f if isinstance(f.get(k, getlink=False), h5py.Group) and _is_nxtomo(f[k]))
    if not names:
        if "volumes" in f and "times_s" in f:
            raise FileFormatError(label, "/", "a tilt series (an NXtomo entry)",
                                  "a tiltstream 4-D result (read it with tiltstream.stream.results.read_result)")
        raise FileFormatError(label, "/", "an NXentry with definition NXtomo", f"top-level objects {sorted(f)[:10]}")
    if len(names) > 1:
        _log.warning("%s: several NXtomo entries %s; reading /%s", label, names, names[0])
    return names[0]


def _per_frame_lengths(g: h5py.Group) -> list[int]:
    paths = ["instrument/detector/data", "instrument/detector/image_key", "instrument/detector/count_time",
             f"instrument/detector/{TIME_NAME}", "sample/rotation_angle"]
    if "frame_info" in g:
        paths += [f"frame_info/{k}" for k in g["frame_info"]]
    return [g[p].shape[0] for p in paths if p in g and g[p].ndim >= 1]


def recording_frame_count(f: h5py.File) -> int:
    """Frames complete in every per-frame dataset of a (possibly still growing) recording."""
    lengths = _per_frame_lengths(f[_find_entry(f, f.filename)])
    return min(lengths) if lengths else 0


def _dataset(g: h5py.Group, *paths: str) -> tuple[str, h5py.Dataset] | tuple[None, None]:
    """(full name, dataset) of the first of ``paths`` in ``g`` that is a dataset."""
    for p in paths:
        obj = g.get(p)
        if isinstance(obj, h5py.Dataset):
            return f"{g.name}/{p}", obj
    return None, None


def _scaled(label: str, name: str, ds: h5py.Dataset, kind: str, n: int | None = None, cut: bool = False,
            what: str = "values") -> np.ndarray:
    """Dataset values in degrees/seconds/nm as float64.

    With ``n``: ``n`` values, one per frame (``what``; NaN allowed), or a FileFormatError; a scalar
    is repeated ``n`` times, and ``cut`` keeps only the first ``n`` (a recording still growing).
    """
    factor = unit_factor(label, name, ds.attrs.get("units"), kind)
    values = np.asarray(ds[()], dtype=np.float64) * factor
    if n is None:
        return values
    if values.ndim == 0:
        return np.full(n, float(values))
    return check_per_frame(label, name, values[:n] if cut else values, n, what=what, finite=False)


def _pixel_nm(label: str, g: h5py.Group, meta: dict[str, Any]) -> float | None:
    sizes = {}
    for axis in ("x", "y"):
        p, ds = _dataset(g, f"sample/{axis}_pixel_size", f"instrument/detector/{axis}_pixel_size")
        if ds is not None and ds.size == 1:
            v = float(_scaled(label, p, ds, "length").reshape(-1)[0])
            sizes[axis] = float(f"{v:.12g}")  # undo m -> nm conversion noise
    x = sizes.get("x", sizes.get("y"))
    if x is None:
        return None
    if not (np.isfinite(x) and x > 0):
        _log.warning("%s: pixel size %r is not a positive number; ignored", label, x)
        return None
    y = sizes.get("y", x)
    if abs(y - x) > 1e-6 * x:
        _log.warning("%s: x and y pixel sizes differ (%g, %g nm); using x", label, x, y)
        meta["pixel_y_nm"] = y
    return x


def open_nxtomo(path: Path) -> RawSeries:
    """Read everything but the frames of an NXtomo file (tiltstream recording or foreign)."""
    label = str(path)
    with open_h5(path) as f, reading(label, "a readable NXtomo file"):  # damaged objects: KeyError, OSError, ...
        entry = _find_entry(f, label)
        g = f[entry]
        root = f"/{entry}"
        ts = g.get("tiltstream")
        is_rec = isinstance(ts, h5py.Group) and _text(ts.attrs.get("format", "")).startswith(RECORDING_FORMAT.split("/")[0])
        closed = bool(ts["closed"][()]) if is_rec and "closed" in ts else True
        data_name, d = _dataset(g, "instrument/detector/data", "data/data")
        if d is None:
            raise FileFormatError(label, f"{root}/instrument/detector/data", "a dataset of frames (N, Y, U)", "none")
        if d.ndim != 3:
            raise FileFormatError(label, data_name, "a 3-D dataset (N, Y, U)", f"a {d.ndim}-D dataset of shape {d.shape}")
        n = d.shape[0]
        meta: dict[str, Any] = {"nxtomo_entry": root}
        if is_rec:
            try:
                meta.update(json.loads(_text(ts.attrs.get("metadata_json", "{}"))))
            except ValueError as e:
                raise FileFormatError(label, f"{root}/tiltstream@metadata_json", "a JSON object", str(e)) from None
            meta["recording_closed"] = closed
            if not closed:
                n = min(_per_frame_lengths(g))
                _log.warning("%s: recording was not closed (still being written, or the writer was killed); "
                             "reading the %d complete frames", label, n)
        if n == 0:
            raise FileFormatError(label, data_name, "at least 1 frame", "0 frames")

        a_name, a_ds = _dataset(g, "sample/rotation_angle", "data/rotation_angle")
        if a_ds is None:
            raise FileFormatError(label, f"{root}/sample/rotation_angle", "a dataset of tilt angles", "none")
        if a_ds.ndim != 1:
            raise FileFormatError(label, a_name, f"{n} angles (one per frame)", f"a dataset of shape {a_ds.shape}")
        cut = not closed
        angles_all = _scaled(label, a_name, a_ds, "angle", n, cut, "angles")

        k_name, k_ds = _dataset(g, "instrument/detector/image_key", "instrument/detector/image_key_control")
        if k_ds is None:
            keys = np.zeros(n, dtype=np.int64)
        else:
            k_values = k_ds[()]
            keys = check_per_frame(label, k_name, k_values[:n] if cut else k_values, n,
                                   what="image keys").astype(np.int64)
            keys[keys == -1] = 0  # image_key_control: -1 = alignment projection
        sel = keys == 0
        skipped = {_KEY_NAMES.get(int(k), f"image_key {k}"): int(np.sum(keys == k)) for k in np.unique(keys[~sel])}
        if skipped:
            meta["skipped_frames"] = skipped
            _log.info("%s: using %d projections (image_key 0), skipping %s", label, int(sel.sum()), skipped)
        if not sel.any():
            raise FileFormatError(label, k_name, "at least 1 projection (image_key 0)", f"{n} frames: {skipped}")
        n_proj = int(sel.sum())
        bad = np.flatnonzero(sel & ~np.isfinite(angles_all))
        if bad.size:  # frame numbers in the file, darks and flats included
            raise FileFormatError(label, a_name, "finite angles", f"NaN/Inf at frame(s) {bad[:10].tolist()}")
        angles = angles_all[sel]

        c_name, c_ds = _dataset(g, "instrument/detector/count_time")
        count_all = None if c_ds is None else _scaled(label, c_name, c_ds, "time", n, cut, "exposure times")
        if count_all is not None and (count_all < 0).any():  # NaN compares False: handled below
            neg = np.flatnonzero(count_all < 0)
            raise FileFormatError(label, c_name, "exposure times >= 0", f"{count_all[neg[0]]:g} s at frame(s) {neg[:10].tolist()}")
        exposure = None
        if count_all is not None and np.isfinite(count_all[sel]).all():
            exposure = count_all[sel]
        elif count_all is not None and np.isfinite(count_all[sel]).any():
            _log.warning("%s: %s has NaN entries; exposure times left unknown", label, c_name)

        times_all, time_source, time_detail = _times(label, g, n, cut, count_all)
        if time_source == "frame_index":
            times = np.arange(n_proj, dtype=np.float64)
        else:
            times = check_per_frame(label, time_detail, times_all[sel], n_proj, what="times")
            if np.any(np.diff(times) < 0):
                _log.warning("%s: frame times are not in increasing order", label)

        extra = {}
        if is_rec and "frame_info" in g:
            for name, ds in g["frame_info"].items():
                if isinstance(ds, h5py.Dataset) and ds.ndim >= 1:
                    values = np.asarray(ds[:n] if cut else ds[()], dtype=np.float64)
                    if values.shape[0] != n:
                        raise FileFormatError(label, f"{root}/frame_info/{name}", f"{n} values (one per frame)", values.shape[0])
                    extra[name] = values[sel]
        pixel = _pixel_nm(label, g, meta)
        tilt_axis = float(ts.attrs["tilt_axis_angle_deg"]) if is_rec and "tilt_axis_angle_deg" in ts.attrs else None
        for key in ("title", "start_time", "end_time"):
            if key in g and isinstance(g[key], h5py.Dataset) and key not in meta:
                meta[key] = _text(g[key][()])
        shape = (int(d.shape[1]), int(d.shape[2]))
        dtype = str(d.dtype)

    def load_frames() -> np.ndarray:
        with open_h5(path) as fh, reading(label, f"readable frames in {data_name}", data_name):
            frames = fh[data_name][:n]
        if frames.shape[0] != n:
            raise FileFormatError(label, data_name, f"{n} frames", frames.shape[0])
        if not sel.all():
            frames = frames[sel]
        return np.asarray(frames, dtype=np.float32)

    return RawSeries(
        label=label,
        format="tiltstream-recording" if is_rec else "nxtomo",
        frame_shape=shape,
        dtype=dtype,
        angles_deg=angles,
        times_s=times,
        time_source=time_source,
        time_detail=time_detail,
        load_frames=load_frames,
        exposure_s=exposure,
        pixel_nm=pixel,
        extra=extra,
        metadata=meta,
        tilt_axis_angle_deg=tilt_axis,
        tilt_axis_source=f"{root}/tiltstream@tilt_axis_angle_deg" if tilt_axis is not None else None,
        files=[label],
    )


def _times(
    label: str, g: h5py.Group, n: int, cut: bool, count_all: np.ndarray | None
) -> tuple[np.ndarray | None, str, str]:
    """(times over all n frames or None, time_source, detail) following the module's rules."""
    name, ds = _dataset(g, f"instrument/detector/{TIME_NAME}")
    if ds is not None:
        return _scaled(label, name, ds, "time", n, cut, "times"), "timestamps", name
    name, ds = _dataset(g, "instrument/detector/start_time")
    if ds is not None and ds.ndim == 1 and np.issubdtype(ds.dtype, np.number):
        start = _scaled(label, name, ds, "time", n, cut, "times")
        stop_name, stop_ds = _dataset(g, "instrument/detector/stop_time")
        if count_all is not None and np.isfinite(count_all).all():
            mid, how = start + count_all / 2.0, "start_time + count_time/2"
        elif stop_ds is not None and stop_ds.ndim == 1 and np.issubdtype(stop_ds.dtype, np.number):
            stop = _scaled(label, stop_name, stop_ds, "time", n, cut, "times")
            mid, how = (start + stop) / 2.0, "(start_time + stop_time)/2"
        else:
            mid, how = start, "start_time (exposure unknown)"
        return mid - np.nanmin(start), "timestamps", f"{name}: {how}, from the first frame's start"
    if count_all is not None and np.isfinite(count_all).all():
        return times_from_count_time(count_all), "cumulative_count_time", (
            f"{g.name}/instrument/detector/count_time: back-to-back exposures over all frames in file order")
    return None, "frame_index", "no timestamps or exposure times in the file"
