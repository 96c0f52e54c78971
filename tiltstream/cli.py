"""``tiltstream`` command line: one entry point, a sub-command per job.

The CLI decides what users see: log level, progress bars and the short summaries printed at the end.
Heavy modules are imported inside each command so ``tiltstream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from tiltstream import __version__
from tiltstream._args import floats as _floats
from tiltstream._args import positive_int as _positive_int

# -- info ----------------------------------------------------------------------------------------
def cmd_info(args: argparse.Namespace) -> int:
    from tiltstream.stream.readers import describe  # noqa: PLC0415

    info = describe(args.file, tilt_axis_angle_deg=args.tilt_axis_angle)
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key:<{width}}  {value}")
    return 0

# -- simulate ------------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from tiltstream import simulate as simulate_mod  # noqa: PLC0415

    out = simulate_mod.run(args)
    print(f"wrote {out.n_frames} frames {out.frame_shape} over {out.duration_s:.1f} s to {args.out}")
    return 0

# -- reconstruct ---------------------------------------------------------------------------------
def cmd_reconstruct(args: argparse.Namespace) -> int:
    from tiltstream import reconstruct as reconstruct_mod  # noqa: PLC0415

    print(reconstruct_mod.run(args))
    return 0

# -- score ---------------------------------------------------------------------------------------
def cmd_score(args: argparse.Namespace) -> int:
    from tiltstream import reconstruct as reconstruct_mod  # noqa: PLC0415

    print(reconstruct_mod.score(args.result, args.truth_from))
    return 0

def build_parser() -> argparse.ArgumentParser:
    from tiltstream import cmd_acquire, cmd_align, cmd_export, cmd_keys, cmd_recon, cmd_record, cmd_view, demo  # noqa: PLC0415 (light at import)

    p = argparse.ArgumentParser(prog="tiltstream", description="Live reconstruction for in-situ electron tomography.")
    p.add_argument("--version", action="version", version=f"tiltstream {__version__}")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    s = sub.add_parser("info", help="what a tilt-series file holds")
    s.add_argument("file", type=Path)
    s.add_argument("--tilt-axis-angle", type=float, default=None, metavar="DEG",
                   help="in-plane tilt-axis angle (from the image Y axis, counter-clockwise); overrides the file")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_info)

    s = sub.add_parser("simulate", help="simulate a (dynamic) phantom tilt series and write an NXtomo recording")
    cmd_acquire.add_series_options(s)
    s.add_argument("--out", type=Path, required=True, help="output recording (.h5 / .nxs)")
    s.set_defaults(func=cmd_simulate)

    s = sub.add_parser("reconstruct", help="batch 3-D/4-D reconstruction of a tilt series")
    s.add_argument("input", type=Path)
    s.add_argument("--method", choices=["fbp", "sirt", "dip"], default="sirt",
                   help="fbp, sirt (per time point, --window) or dip (space-time deep image prior)")
    s.add_argument("--window", default=None, metavar="W",
                   help="frames per time point ('40') or seconds ('12.5s'); default: all frames (static)")
    s.add_argument("--iterations", type=_positive_int, default=100, metavar="K", help="SIRT iterations (default 100)")
    s.add_argument("--times", type=_floats, default=None, metavar="T1,T2,...",
                   help="times in s since stream start; default: a spread over the series")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    s.add_argument("--tilt-axis-angle", type=float, default=None, metavar="DEG",
                   help="in-plane tilt-axis angle of the frames; overrides the file")
    s.add_argument("--axis-offset", type=float, default=0.0, metavar="PX",
                   help="tilt axis position right of the detector centre, in pixels")
    s.add_argument("--height", type=_positive_int, default=None, metavar="NZ",
                   help="volume thickness along the beam in voxels of the frames (default: frame width)")
    s.add_argument("--bin", type=_positive_int, default=1, metavar="N",
                   help="average N×N pixel blocks of every frame first: a volume N× smaller per edge (default 1; "
                        "--axis-offset and --height stay in pixels of the frames as stored)")
    s.add_argument("--out", type=Path, required=True,
                   help="output result: .h5 (HDF5: volumes (T,Z,Y,X), times_s) or .zarr (OME-Zarr, the [zarr] extra)")
    g = s.add_argument_group("dip", "options of --method dip")
    g.add_argument("--steps", type=_positive_int, default=None, metavar="S",
                   help="optimiser steps in all (default 2000; with --resume: the checkpoint's)")
    g.add_argument("--checkpoint", type=Path, default=None, metavar="CKPT",
                   help="checkpoint written at every evaluation (default: OUT with suffix .dip.pt)")
    g.add_argument("--resume", type=Path, default=None, metavar="CKPT",
                   help="continue a fit from its checkpoint (same data); with no more --steps it only "
                        "queries the best model at --times")
    g.add_argument("--time-limit", type=float, default=None, metavar="S", help="stop fitting after S seconds")
    g.add_argument("--seed", type=int, default=0, help="random seed of the fit (default 0)")
    g = s.add_argument_group("more than one process", "dask.distributed slabs (fbp, sirt); DDP (dip)")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="reconstruct Y-slabs on a running dask scheduler (tcp://host:8786) or on local:N, "
                        "N worker processes started for the run (the [distributed] extra)")
    g.add_argument("--slab-rows", type=_positive_int, default=None, metavar="R",
                   help="detector rows per slab with --scheduler (default: about 4 slabs per worker)")
    g.add_argument("--nproc", type=_positive_int, default=None, metavar="N",
                   help="--method dip: train one model on N processes with DistributedDataParallel "
                        "(gloo on CPU, nccl on GPU); under torchrun RANK/WORLD_SIZE are used instead")
    s.add_argument("--align", action="store_true",
                   help="align the series first (drift, tilt-axis direction and offset; see 'tiltstream align')")
    cmd_align.add_align_options(s)
    s.set_defaults(func=cmd_reconstruct)

    s = sub.add_parser("score", help="compare a 4-D result with the ground truth of the simulation it came from")
    s.add_argument("result", type=Path)
    s.add_argument("--truth-from", type=Path, default=None, metavar="SIM.h5",
                   help="simulated recording (default: the result's input)")
    s.set_defaults(func=cmd_score)

    demo.register(sub)
    cmd_acquire.register(sub)
    cmd_record.register(sub)
    cmd_recon.register(sub)
    cmd_view.register(sub)
    cmd_align.register(sub)
    cmd_keys.register(sub)
    cmd_export.register(sub)
    return p

def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError, OSError) as exc:
        if args.verbose >= 2:
            raise
        print(f"tiltstream {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # numpy says what it could not allocate ("Unable to allocate 95 GiB for ...")
        if args.verbose >= 2:
            raise
        what = str(exc) or "the memory this needs could not be allocated"
        print(f"tiltstream {args.command}: error: out of memory: {what}", file=sys.stderr)
        return 2

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
