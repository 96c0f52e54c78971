"""``tiltstream view``: the operator monitor.

Usage::

    tiltstream view --connect tcp://127.0.0.1:5557 [--frames tcp://127.0.0.1:5556] [--show dip]
                    [--snapshot out.png --after 5] [--movie slices.gif]

Shows three linked orthogonal slices of the live reconstruction, the latest raw frame, the tilt
coverage, residual/temperature/dose traces and a status line. When the service trains the online
DIP (``tiltstream recon --dip``), a selector switches the slices and the time slider between the
streaming SIRT and the DIP's newest estimate (``--show dip`` starts on the DIP). With ``--snapshot`` (or ``--movie``)
it runs headless: receives for ``--after`` seconds, writes the file(s) and exits.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from tiltstream._args import positive_float, positive_int
from tiltstream._curve_args import add_curve_arguments, curve_from_args

__all__ = ["register", "add_view_arguments", "cmd_view"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("view", help="operator monitor: live slices, raw frames, coverage, traces")
    add_view_arguments(s)
    s.set_defaults(func=cmd_view)
    return s


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT like 1600x1000, got {text!r}") from None
    if w < 320 or h < 240:
        raise argparse.ArgumentTypeError(f"expected a window of at least 320x240, got {w}x{h}")
    return w, h


def add_view_arguments(s: argparse.ArgumentParser) -> None:
    """The options of ``tiltstream view``."""
    s.add_argument("--connect", metavar="RECON_EP", default=None,
                   help="the reconstruction service's PUB endpoint (tiltstream recon --pub / tiltstream demo)")
    s.add_argument("--frames", metavar="FRAMES_EP", default=None,
                   help="the microscope's or simulator's frame PUB endpoint (tiltstream sim --pub)")
    s.add_argument("--snapshot", type=Path, default=None, metavar="PNG",
                   help="headless: write the window to PNG after --after seconds and exit")
    s.add_argument("--after", type=positive_float, default=5.0, metavar="S",
                   help="seconds to receive before --snapshot/--movie (default 5)")
    s.add_argument("--movie", type=Path, default=None, metavar="FILE",
                   help="headless: export the slice history (.gif, or .mp4 with ffmpeg) after --after seconds")
    s.add_argument("--display-hz", type=positive_float, default=20.0, metavar="HZ",
                   help="panel refresh rate (default 20)")
    s.add_argument("--show", choices=("sirt", "dip"), default="sirt",
                   help="reconstruction shown first: sirt (the live streaming SIRT, default) or dip (the online "
                        "DIP estimate of `tiltstream recon --dip`, once one arrives); the window can switch")
    s.add_argument("--history", type=positive_int, default=64, metavar="N",
                   help="volumes kept for the time slider (default 64)")
    s.add_argument("--out-dir", type=Path, default=Path("."), metavar="DIR",
                   help="where the Snapshot and Export buttons write (default: here)")
    s.add_argument("--size", type=_size, default=(1600, 1000), metavar="WxH", help="window size (default 1600x1000)")
    add_curve_arguments(s)
    s.add_argument("--curve-frames-server-key", type=Path, default=None, metavar="FILE",
                   help="CURVE: public *.key of the --frames publisher when it is not the --curve-server-key "
                        "machine (default: --curve-server-key)")


def cmd_view(args: argparse.Namespace) -> int:
    """Run the monitor; prints one summary line in headless mode."""
    if not args.connect and not args.frames:
        raise ValueError("expected --connect RECON_EP and/or --frames FRAMES_EP, got neither")
    from tiltstream.viz.app import launch_monitor  # noqa: PLC0415

    curve = curve_from_args(args, bind=False)  # a monitor only connects: a CURVE client
    frames_curve = curve
    if getattr(args, "curve_frames_server_key", None) is not None:
        if curve is None:
            raise ValueError("--curve-frames-server-key: expected --curve-key FILE too")
        from tiltstream.stream.sockets import CurveClientConfig  # noqa: PLC0415

        frames_curve = CurveClientConfig(curve.client_secret_key_file, args.curve_frames_server_key)
    status = launch_monitor(args.connect, args.frames, snapshot=args.snapshot, after_s=args.after, movie=args.movie,
                            display_hz=args.display_hz, history_volumes=args.history, out_dir=args.out_dir,
                            size=args.size, curve=curve, frames_curve=frames_curve, show=args.show)
    if args.snapshot is not None or args.movie is not None:
        written = ", ".join(str(p) for p in (args.snapshot, args.movie) if p is not None)
        print(f"view: wrote {written}; {status.summary()}")
        if status.state == "waiting":
            print("view: warning: no data arrived; the snapshot shows an empty monitor", file=sys.stderr)
            return 1
    return 0
