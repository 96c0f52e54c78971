"""Thermo Fisher Velox ``.emd`` and Gatan ``.dm3``/``.dm4`` tilt series, read with RosettaSciIO.

``rosettasciio`` (module ``rsciio``, optional extra ``formats``) reads the frames and the axes; the
first image of the file is the series: a stack (N, Y, X), or one image (a series of one frame).

* **Pixel size**: the scale of the image's x axis, in its unit (nm, µm, ...), as nm.
* **Angles**, first that applies: a ``.rawtlt``/``.tlt`` beside the file; the stack axis when its
  unit is an angle (DigitalMicrograph tomography stacks: offset + scale x index, degrees); the
  per-frame ``Stage.AlphaTilt`` (radians) of a Velox file's ``Metadata`` (read per frame with
  h5py: RosettaSciIO parses only the first frame's); DigitalMicrograph's ``Microscope Info /
  Stage Position / Stage Alpha`` (degrees) for a one-frame file; else the CSV's.
* **Times**: a ``time_s`` column of the CSV (``series.csv`` beside the file); else Velox's per-frame
  ``Acquisition.AcquisitionStartDatetime.DateTime`` (s) after the first frame's; else the frame index.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from tiltstream.stream.errors import FileFormatError, reading
from tiltstream.stream.optional import require
from tiltstream.stream.rawseries import RawSeries, check_per_frame, unit_factor
from tiltstream.stream.sidecars import fields_from_table, find_beside, read_angle_csv, read_tlt

__all__ = ["RSCIIO_SUFFIXES", "open_rsciio"]

_log = logging.getLogger(__name__)

RSCIIO_SUFFIXES = (".emd", ".dm3", ".dm4")
_KIND = {".emd": ("emd", "Velox .emd"), ".dm3": ("digitalmicrograph", "Gatan .dm3"),
         ".dm4": ("digitalmicrograph", "Gatan .dm4")}


def _signals(path: Path, module: str, what: str) -> list[dict[str, Any]]:
    require("rsciio", path, f"{what} files", package="rosettasciio")
    import importlib  # noqa: PLC0415

    reader = importlib.import_module(f"rsciio.{module}").file_reader
    with reading(path, f"a readable {what} file"):
        return reader(str(path))


def _get(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, dict) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _velox_frames(path: Path, n: int) -> list[dict[str, Any]]:
    """The JSON ``Metadata`` of every frame of the first Velox image (one column per frame)."""
    import h5py  # noqa: PLC0415

    with reading(path, "readable Velox per-frame metadata", "Data/Image/*/Metadata"), h5py.File(path, "r") as f:
        group = f["Data/Image"]
        meta = np.asarray(group[next(iter(group))]["Metadata"])
    if meta.ndim != 2 or meta.shape[1] < n:
        raise FileFormatError(path, "Data/Image/*/Metadata", f"one metadata column per frame ({n})", f"shape {meta.shape}")
    return [json.loads(meta[:, i].tobytes().decode("utf-8").rstrip("\x00")) for i in range(n)]


def _per_frame(path: Path, frames_md: list[dict[str, Any]], keys: tuple[str, ...], n: int) -> np.ndarray | None:
    values = [_get(md, *keys) for md in frames_md]
    if any(v is None for v in values):
        return None
    return check_per_frame(str(path), "/".join(keys), [float(v) for v in values], n)


def open_rsciio(path: Path) -> RawSeries:
    """Read a Velox/Gatan file (frames kept in memory) and its sidecar files."""
    module, what = _KIND[path.suffix.lower()]
    images = [s for s in _signals(path, module, what) if np.ndim(s["data"]) in (2, 3)]
    if not images:
        raise FileFormatError(path, "data", "an image or a stack of images (N, Y, X)", "no image in the file")
    signal = images[0]
    data = np.asarray(signal["data"])
    if data.ndim == 2:
        data = data[None]
    n, ny, nx = data.shape
    axes = sorted(signal["axes"], key=lambda a: a.get("index_in_array", 0))
    label = str(path)
    fields: dict[str, Any] = {"extra": {}}
    x_axis = axes[-1]
    try:
        fields["pixel_nm"] = float(f"{float(x_axis['scale']) * unit_factor(label, 'x axis', x_axis['units'], 'length'):.7g}")
    except FileFormatError:
        _log.warning("%s: x axis unit %r is not a length; pixel size unknown", path, x_axis.get("units"))
    files = [str(path)]
    frames_md = _velox_frames(path, n) if module == "emd" else [signal["original_metadata"]] * (n == 1)
    angle_detail = None
    if n > 1 and len(axes) == 3 and _is_angle(axes[0].get("units")):
        factor = unit_factor(label, "stack axis", axes[0]["units"], "angle")
        fields["angles_deg"] = (float(axes[0]["offset"]) + float(axes[0]["scale"]) * np.arange(n)) * factor
        angle_detail = "stack axis"
    elif module == "emd":
        alpha = _per_frame(path, frames_md, ("Stage", "AlphaTilt"), n)
        if alpha is not None:
            fields["angles_deg"] = np.rad2deg(alpha)
            angle_detail = "Velox Stage.AlphaTilt"
        stamps = _per_frame(path, frames_md, ("Acquisition", "AcquisitionStartDatetime", "DateTime"), n)
        if stamps is not None:
            fields.update(times_s=stamps - stamps[0], time_source="timestamps",
                          time_detail=f"{path}: Acquisition.AcquisitionStartDatetime per frame")
    elif frames_md:
        alpha = _get(frames_md[0], "ImageList", "TagGroup0", "ImageTags", "Microscope Info", "Stage Position",
                     "Stage Alpha")
        if alpha is not None:
            fields["angles_deg"] = np.array([float(alpha)])
            angle_detail = "DigitalMicrograph Stage Alpha"
    tlt = find_beside(path, (".rawtlt", ".tlt"))
    csv = find_beside(path, (".csv",))
    if tlt is not None:
        files.append(str(tlt))
        fields["angles_deg"] = check_per_frame(f"{path} + {tlt.name}", "angles", read_tlt(tlt), n, what="angles")
        angle_detail = tlt.name
    if csv is not None:
        files.append(str(csv))
        fields.update(fields_from_table(label, read_angle_csv(csv), n, angles_deg=fields.get("angles_deg")))
        fields.pop("csv_settings", None)
    if "angles_deg" not in fields:
        raise FileFormatError(path, "angles", f"tilt angles in the file or a {path.with_suffix('.rawtlt').name} or "
                              f"{path.with_suffix('.csv').name} beside it", "none")
    if "times_s" not in fields:
        fields.update(times_s=np.arange(n, dtype=np.float64), time_source="frame_index",
                      time_detail=f"no frame times in the file and no {path.with_suffix('.csv').name} with time_s")
    frames = data.astype(np.float32, copy=False)
    return RawSeries(
        label=" + ".join([label] + [Path(f).name for f in files[1:]]),
        format=module if module == "emd" else "dm",
        frame_shape=(ny, nx),
        dtype=str(data.dtype),
        load_frames=lambda: frames,
        metadata={"angle_source": angle_detail or "CSV"},
        files=files,
        **fields,
    )


def _is_angle(unit: Any) -> bool:
    try:
        unit_factor("", "", str(unit), "angle")
    except FileFormatError:
        return False
    return bool(unit)
