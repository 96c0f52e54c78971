"""``tiltstream recon``: run the live reconstruction service.

Usage::

    tiltstream recon --connect tcp://127.0.0.1:5556 --pub tcp://127.0.0.1:5557 [--window 64]
                     [--subset 16] [--half-life S] [--device auto] [--resume RECORDING.h5]

It prints a one-line summary (frames, updates, update time, latency p50/p99, rejects) at the end.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path
from typing import Any

from tiltstream._args import positive_float, positive_int

__all__ = ["register", "cmd_recon", "engine_config"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("recon", help="live reconstruction service: streaming SIRT on every frame")
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="ENDPOINT", help="frame stream to connect to (lossless PUSH side)")
    where.add_argument("--bind", metavar="ENDPOINT", help="bind and let the frame source connect")
    s.add_argument("--pub", default="tcp://127.0.0.1:5557", metavar="ENDPOINT",
                   help="where monitors subscribe (default tcp://127.0.0.1:5557)")
    add_engine_options(s)
    s.add_argument("--resume", type=Path, default=None, metavar="RECORDING",
                   help="fold in the recording of the current series first (restart mid-series)")
    s.add_argument("--idle-timeout", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds without frames")
    s.add_argument("--until-end", action="store_true", help="stop when the series ends (end/1)")
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


def engine_config(args: argparse.Namespace):
    from tiltstream.recon.engine import EngineConfig  # noqa: PLC0415
    from tiltstream.recon.streaming import StreamingParams  # noqa: PLC0415

    params = StreamingParams(window_frames=args.window, window_s=args.window_seconds, half_life_s=args.half_life,
                             subset_size=args.subset, steps_per_update=args.steps)
    return EngineConfig(streaming=params, device=args.device)


def cmd_recon(args: argparse.Namespace) -> int:
    from tiltstream.recon.service import ReconService  # noqa: PLC0415

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    endpoint = args.connect or args.bind
    with ReconService(endpoint, args.pub, engine_config(args), bind=bool(args.bind), resume_from=args.resume) as svc:
        print(f"recon: frames from {svc.frames_endpoint}, publishing on {svc.pub_endpoint}", flush=True)
        try:
            stats = svc.run(stop, until_end=args.until_end, idle_timeout_s=args.idle_timeout)
        except KeyboardInterrupt:
            stats = svc.stats
    print("recon: " + json.dumps(stats.summary()))
    return 0
