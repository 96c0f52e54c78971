"""``tiltstream export``: a 4-D result for other tools.

Usage::

    tiltstream export RESULT --to mrc|tiff|zarr|mp4|gif [--time T [--interpolate]] [--out PATH]

MRC (tomviz, IMOD) holds one volume with the voxel size; TIFF is an ImageJ hyperstack (TZYX, or
ZYX with ``--time``); zarr an OME-Zarr image (napari); mp4/gif a movie of orthogonal slices over
time, as the monitor exports. ``--time`` picks the volume nearest in time (``--interpolate``: the
linear blend at T). The formats live in :mod:`tiltstream.stream.export` and
:mod:`tiltstream.viz.export`; this module only parses.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tiltstream._args import refuse_same_file

__all__ = ["register", "cmd_export", "MOVIES"]

#: movie formats, written by tiltstream.viz.export
MOVIES = ("mp4", "gif")
#: --out suffixes each format is written under (the writers choose the format by suffix); the first is the default
_SUFFIXES = {"mrc": (".mrc", ".map", ".rec"), "tiff": (".tif", ".tiff"), "zarr": (".zarr",), "mp4": (".mp4",),
             "gif": (".gif",)}


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("export", help="export a 4-D result to MRC, ImageJ TIFF, OME-Zarr or a slice movie")
    s.add_argument("result", type=Path, help="result file (.h5 or .zarr from 'tiltstream reconstruct')")
    s.add_argument("--to", choices=list(_SUFFIXES), required=True, help="output format")
    s.add_argument("--time", type=float, default=None, metavar="T",
                   help="the volume at T s since stream start (nearest; default: all, or the last for mrc)")
    s.add_argument("--interpolate", action="store_true", help="with --time: blend the two volumes around T")
    s.add_argument("--out", type=Path, default=None, metavar="PATH",
                   help="output file (default: RESULT with the format's suffix)")
    s.add_argument("--fps", type=float, default=4.0, help="movie frames per second (default 4)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing output")
    s.set_defaults(func=cmd_export)
    return s


def cmd_export(args: argparse.Namespace) -> int:
    out = args.out or args.result.with_suffix(_SUFFIXES[args.to][0])
    refuse_same_file(out, args.result, what="the result")
    if out.suffix.lower() not in _SUFFIXES[args.to]:
        raise ValueError(f"--out: expected a {' or '.join(_SUFFIXES[args.to])} file for --to {args.to}, got {out}")
    if args.interpolate and args.time is None:
        raise ValueError("--interpolate: expected --time T as well, got no --time")
    if args.to in MOVIES:
        if out.exists() and not args.overwrite:
            raise FileExistsError(f"{out}: refusing to replace an existing file (pass --overwrite)")
        n = result_movie(args.result, out, fps=args.fps, time_s=args.time)
        print(f"wrote a slice movie of {n} volume(s) to {out}")
        return 0
    from tiltstream.stream.export import export_result  # noqa: PLC0415

    done = export_result(args.result, out, to=args.to, time_s=args.time, interpolate=args.interpolate,
                         overwrite=args.overwrite)
    when = ", ".join(f"{t:g}" for t in done.times_s)
    how = " (interpolated)" if done.interpolated else ""
    print(f"wrote {len(done.times_s)} volume(s) at t = {when} s{how} to {done.path} ({done.format})")
    return 0


def result_movie(result: Path, out: Path, *, fps: float, time_s: float | None = None) -> int:
    """Write the monitor's orthoview movie (:func:`tiltstream.viz.export.history_frames`) of a
    result's volumes, cut through their centre; returns the number of frames."""
    import numpy as np  # noqa: PLC0415

    from tiltstream.stream.results import read_result, result_voxel_nm, volume_at  # noqa: PLC0415
    from tiltstream.viz.export import history_frames, write_movie  # noqa: PLC0415
    from tiltstream.viz.history import VolumeEntry  # noqa: PLC0415

    volumes, times, attrs = read_result(result)
    if time_s is not None:
        vol, t = volume_at(volumes, times, time_s)
        volumes, times = vol[None], np.array([t])
    if len(times) == 0:
        raise ValueError(f"{result}: expected at least one volume for a movie, got none")
    label = f"{attrs.get('method', 'result')} result"  # frame label "<method> result #<index>"
    voxel = result_voxel_nm(attrs)
    entries = [VolumeEntry(seq=i, t_s=float(t), data=v, source=label, n_frames_used=0, voxel_nm=voxel,
                           received_s=0.0) for i, (v, t) in enumerate(zip(volumes, times))]
    shape = volumes.shape[1:]
    frames = history_frames(entries, tuple(s // 2 for s in shape), shape)
    write_movie(frames, out, fps=fps)
    return len(frames)
