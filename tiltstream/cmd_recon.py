"""``tiltstream recon``: run the live reconstruction service.

Usage::

    tiltstream recon --connect tcp://127.0.0.1:5556 --pub tcp://127.0.0.1:5557 [--window 64]
                     [--subset 16] [--half-life S] [--device auto] [--memory-budget 8G] [--resume RECORDING.h5]
                     [--align] [--scheduler ADDRESS|local:N]
                     [--dip [--dip-edge 64] [--dip-period 10]]

With ``--dip`` the space-time DIP trains in the background on every frame so far (binned to
``--dip-edge``) and publishes refreshed 4-D estimates (``volume/1`` with ``source="dip"``, one per
time point) and its held-out score beside the streaming SIRT.

With ``--scheduler`` the streaming SIRT runs on Y-slab actors on a dask cluster (a running scheduler's
address, or ``local:N`` worker processes started for the run): this process keeps intake, validation
and publishing, and a worker lost mid-series is reported and its slab rebuilt.

It prints a one-line summary (frames, updates, update time, latency p50/p99, rejects) at the end.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tiltstream._args import memory_size, positive_float, positive_int, stop_on_signals
from tiltstream._curve_args import add_curve_arguments, curve_from_args

__all__ = ["register", "cmd_recon", "engine_config"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("recon", help="live reconstruction service: streaming SIRT on every frame")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="ENDPOINT", help="frame stream to connect to (lossless PUSH side)")
    where.add_argument("--bind", metavar="ENDPOINT", help="bind and let the frame source connect")
    s.add_argument("--pub", default="tcp://127.0.0.1:5557", metavar="ENDPOINT",
                   help="where monitors subscribe (default tcp://127.0.0.1:5557)")
    add_engine_options(s)
    s.add_argument("--align", action="store_true",
                   help="correct each frame's drift before folding it in; shifts are published as metrics")
    s.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the streaming SIRT on Y-slab actors on a dask scheduler (tcp://host:8786) or on "
                        "local:N worker processes (needs the [distributed] extra)")
    add_dip_options(s)
    s.add_argument("--resume", type=Path, default=None, metavar="RECORDING",
                   help="fold in the recording of the current series first (restart mid-series)")
    s.add_argument("--idle-timeout", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds without frames")
    s.add_argument("--until-end", action="store_true", help="stop when the series ends (end/1)")
    add_curve_arguments(s)
    s.set_defaults(func=cmd_recon)
    return s


def add_engine_options(s: argparse.ArgumentParser) -> None:
    s.add_argument("--window", type=positive_int, default=64, metavar="N", help="frames in the sliding window")
    s.add_argument("--window-seconds", type=positive_float, default=None, metavar="S",
                   help="also drop frames older than S seconds")
    s.add_argument("--half-life", type=positive_float, default=None, metavar="S",
                   help="exponential forgetting: a frame S seconds old weighs half")
    s.add_argument("--subset", type=positive_int, default=8, metavar="K", help="frames per ordered-subset step")
    s.add_argument("--steps", type=positive_int, default=1, metavar="N", help="subset steps per update")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--bin", type=positive_int, default=1, metavar="N",
                   help="average N×N pixel blocks of every frame before the live SIRT: a volume N× smaller per "
                        "edge, for frames too large to reconstruct at the frame rate (default 1; recordings "
                        "keep the full frames)")
    add_memory_budget_option(s, "a series whose live estimate needs more is refused")


def add_memory_budget_option(s: argparse.ArgumentParser, what: str) -> None:
    s.add_argument("--memory-budget", type=memory_size, default=None, metavar="SIZE",
                   help=f"bytes this service may allocate for what peers announce, e.g. 8G or 512M; {what} "
                        "(default: TILTSTREAM_MEMORY_BUDGET, else a quarter of physical memory)")


def add_dip_options(s: argparse.ArgumentParser) -> None:
    g = s.add_argument_group("online DIP")
    g.add_argument("--dip", action="store_true", help="also train the space-time DIP online and publish its estimates")
    g.add_argument("--dip-edge", type=positive_int, default=64, metavar="PX",
                   help="frames are binned to at most this edge for the DIP (default 64)")
    g.add_argument("--dip-period", type=positive_float, default=10.0, metavar="S",
                   help="least seconds between two published DIP estimates (default 10)")
    g.add_argument("--dip-times", type=positive_int, default=6, metavar="N",
                   help="volumes per DIP estimate, spread over the series so far (default 6)")


def dip_config(args: argparse.Namespace):
    """OnlineDipConfig from ``--dip*`` options, or None without ``--dip``."""
    if not getattr(args, "dip", False):
        return None
    from tiltstream.recon.dip.online import OnlineDipConfig  # noqa: PLC0415

    return OnlineDipConfig(max_edge=args.dip_edge, publish_period_s=args.dip_period, n_times=args.dip_times,
                           device=args.device)


def engine_config(args: argparse.Namespace):
    from tiltstream.recon.engine import EngineConfig  # noqa: PLC0415
    from tiltstream.recon.streaming import StreamingParams  # noqa: PLC0415

    params = StreamingParams(window_frames=args.window, window_s=args.window_seconds, half_life_s=args.half_life,
                             subset_size=args.subset, steps_per_update=args.steps)
    return EngineConfig(streaming=params, device=args.device, bin=args.bin, align=bool(getattr(args, "align", False)),
                        memory_budget_bytes=getattr(args, "memory_budget", None),
                        scheduler=getattr(args, "scheduler", None))


def cmd_recon(args: argparse.Namespace) -> int:
    from tiltstream.recon.service import ReconService  # noqa: PLC0415

    if args.scheduler:
        from tiltstream.recon.dask_batch import parse_scheduler, require_distributed  # noqa: PLC0415

        parse_scheduler(args.scheduler)
        require_distributed()
    # The frame socket's CURVE role follows --bind/--connect; the viewers' PUB is always bound (a server).
    curve = curve_from_args(args, bind=bool(args.bind))
    pub_curve = curve_from_args(args, bind=True) if args.pub else None
    endpoint = args.connect or args.bind
    with stop_on_signals() as stop, ReconService(
        endpoint, args.pub, engine_config(args), bind=bool(args.bind), resume_from=args.resume, dip=dip_config(args),
        curve=curve, pub_curve=pub_curve,
    ) as svc:
        print(f"recon: frames from {svc.frames_endpoint}, publishing on {svc.pub_endpoint}", flush=True)
        try:
            stats = svc.run(stop, until_end=args.until_end, idle_timeout_s=args.idle_timeout)
        except KeyboardInterrupt:
            stats = svc.stats
    print("recon: " + json.dumps(stats.summary()))
    return 0
