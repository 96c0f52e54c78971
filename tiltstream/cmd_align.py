"""``tiltstream align``: estimate and apply the alignment of a tilt series, write it as a recording.

Usage::

    tiltstream align INPUT --out ALIGNED.h5 [--tilt-axis-angle DEG] [--coarse com|neighbours|none]
                     [--no-matching] [--dynamic | --static] [--keep-axis-offset]

The output is a tiltstream (NXtomo) recording of the aligned frames: background removed, tilt axis
along the rows, drift removed and, unless ``--keep-axis-offset``, the tilt axis moved to the
detector centre, so any reconstruction tool can use it as it is. The alignment is recorded beside
the frames: per-frame ``align_shift_px`` (dy, du), ``align_background`` and ``align_scale`` in
``/entry/frame_info``, and the tilt-axis angle and offset with every diagnostic in the metadata
(``alignment``).

The frames are read as stored and resampled once: an in-plane tilt-axis angle in the file (or
``--tilt-axis-angle``) is where the search starts; without one the search also tries a tilt
axis along the columns.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tiltstream._args import positive_int, refuse_same_file

__all__ = ["register", "cmd_align", "add_align_options", "align_params", "read_and_align"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("align", help="align a tilt series (drift, tilt axis) and write the aligned recording")
    s.add_argument("input", type=Path, help="tilt series: NXtomo/tiltstream .h5, MRC + .rawtlt, TIFF + CSV")
    s.add_argument("--out", type=Path, required=True, help="aligned recording to write (.h5)")
    s.add_argument("--tilt-axis-angle", type=float, default=None, metavar="DEG",
                   help="in-plane tilt-axis angle of the stored frames (overrides the file); the search starts there")
    add_align_options(s)
    s.add_argument("--keep-axis-offset", action="store_true",
                   help="leave the tilt axis where it is (recorded as axis_offset_px) instead of centring it")
    s.add_argument("--json", action="store_true", help="print the alignment summary as JSON")
    s.set_defaults(func=cmd_align)
    return s


def add_align_options(s: argparse.ArgumentParser) -> None:
    """Options shared by ``align`` and ``reconstruct --align``."""
    g = s.add_argument_group("alignment")
    g.add_argument("--coarse", choices=["com", "neighbours", "none"], default="com",
                   help="first drift estimate: centre of mass (isolated particle, default) or chained "
                        "correlation of neighbours in angle (cluttered field)")
    g.add_argument("--no-rotation", action="store_true", help="do not estimate the in-plane tilt-axis angle")
    g.add_argument("--no-matching", action="store_true", help="skip projection matching (coarse alignment only)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--dynamic", dest="dynamic", action="store_true", default=None,
                      help="match against time-window reconstructions (particle changes during the series)")
    mode.add_argument("--static", dest="dynamic", action="store_false",
                      help="match against one reconstruction of all frames")
    g.add_argument("--align-window", type=positive_int, default=24, metavar="N",
                   help="frames per time window for --dynamic (default 24)")
    g.add_argument("--align-rounds", type=positive_int, default=8, metavar="K",
                   help="most projection-matching rounds (default 8)")
    g.add_argument("--align-size", type=positive_int, default=96, metavar="PX",
                   help="projection matching works on frames binned to at most PX pixels (default 96)")
    g.add_argument("--no-normalize", action="store_true", help="keep the frames' background and gain as they are")


def align_params(args: argparse.Namespace, *, initial_angle: float | None, file_has_angle: bool):
    """:class:`~tiltstream.recon.align.AlignParams` from the command line."""
    from tiltstream.recon.align import AlignParams, MatchingParams  # noqa: PLC0415

    return AlignParams(
        normalize=not args.no_normalize,
        tilt_axis_angle_deg=initial_angle,
        estimate_rotation=not args.no_rotation,
        detect_quarter_turn=not file_has_angle,
        coarse=args.coarse,
        matching=not args.no_matching,
        dynamic=args.dynamic,
        window_frames=args.align_window,
        matching_params=replace(MatchingParams(), max_rounds=args.align_rounds, max_size=args.align_size),
    )


def read_and_align(path: Path, args: argparse.Namespace):
    """Read ``path`` as stored, estimate its alignment; returns (series as stored, Alignment)."""
    from tiltstream.recon.align import align_series  # noqa: PLC0415
    from tiltstream.stream.readers import describe, read_series  # noqa: PLC0415

    info = describe(path)
    file_has_angle = not str(info["tilt_axis_source"]).startswith("none")
    given = getattr(args, "tilt_axis_angle", None)
    initial = given if given is not None else (info["tilt_axis_angle_deg"] if file_has_angle else None)
    series = read_series(path, tilt_axis_angle_deg=0.0)  # as stored: one resampling, done by the alignment
    params = align_params(args, initial_angle=initial, file_has_angle=file_has_angle or given is not None)
    return series, align_series(series, params=params)


def summary(alignment: Any) -> dict[str, Any]:
    import numpy as np  # noqa: PLC0415

    s = alignment.shifts_px
    m = alignment.info.get("matching", {})
    return {
        "frames": alignment.n_frames,
        "tilt_axis_angle_deg": round(alignment.tilt_axis_angle_deg, 3),
        "axis_offset_px": round(alignment.axis_offset_px, 3),
        "shift_rms_px": [round(float(v), 3) for v in np.sqrt(np.mean(s**2, axis=0))],
        "shift_max_px": [round(float(v), 3) for v in np.max(np.abs(s), axis=0)],
        "matching_rounds": m.get("rounds"),
        "matching_converged": m.get("converged"),
        "dynamic": m.get("dynamic"),
        "seconds": round(alignment.info["timings"]["total_s"], 2),
    }


def cmd_align(args: argparse.Namespace) -> int:
    from tiltstream.recon.align import apply_alignment  # noqa: PLC0415
    from tiltstream.stream.nxtomo import write_series  # noqa: PLC0415

    refuse_same_file(args.out, args.input)
    series, alignment = read_and_align(args.input, args)
    aligned = apply_alignment(series, alignment, centre_axis=not args.keep_axis_offset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_series(args.out, aligned, overwrite=True)
    info = summary(alignment)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"aligned {info['frames']} frames in {info['seconds']} s: tilt axis {info['tilt_axis_angle_deg']}°, "
              f"offset {info['axis_offset_px']} px{' (kept)' if args.keep_axis_offset else ' (centred)'}, "
              f"drift rms (dy, du) {info['shift_rms_px']} px; wrote {args.out}")
    return 0
