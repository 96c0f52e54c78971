"""``tiltstream record``: write the live lossless frame stream to NXtomo recordings.

Usage::

    tiltstream record --connect tcp://127.0.0.1:5555 --out run.h5 [--max-frames N] [--idle-timeout S]
    tiltstream record --bind tcp://127.0.0.1:5555 --out run.h5

Later series go to ``run_002.h5``, ``run_003.h5``, ... Ctrl-C (or SIGTERM) finishes the frame in
hand, closes the file cleanly and prints the summary; a second Ctrl-C interrupts at once. With
``-v`` every ``--ack-every`` frames an ``ack n=... seq=... file=...`` line is logged.
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from tiltstream._args import positive_float, positive_int, stop_on_signals
from tiltstream._curve_args import add_curve_arguments, curve_from_args
from tiltstream.cmd_recon import add_memory_budget_option

__all__ = ["register", "cmd_record"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``record`` sub-command to ``subparsers`` (from ``parser.add_subparsers()``)."""
    s = subparsers.add_parser(
        "record", help="record a live frame stream to NXtomo HDF5 files (one per series)"
    )
    where = s.add_mutually_exclusive_group(required=True)
    where.add_argument("--connect", metavar="ENDPOINT", help="connect to a sender, e.g. tcp://127.0.0.1:5555")
    where.add_argument("--bind", metavar="ENDPOINT", help="bind and let senders connect")
    s.add_argument("--out", type=Path, required=True, help="recording of the first series (.h5 / .nxs)")
    s.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N frames")
    s.add_argument("--idle-timeout", type=positive_float, default=None, metavar="S",
                   help="stop after S seconds without a message (default: wait until stopped)")
    s.add_argument("--until-end", action="store_true", help="stop when the first series ends (end/1)")
    s.add_argument("--overwrite", action="store_true", help="replace existing files")
    s.add_argument("--ack-every", type=positive_int, default=100, metavar="N",
                   help="log an ack line every N frames (shown with -v; default 100)")
    add_memory_budget_option(s, "a larger message disconnects its sender")
    add_curve_arguments(s)
    s.set_defaults(func=cmd_record)
    return s


def cmd_record(args: argparse.Namespace) -> int:
    """Run the recorder until it is stopped; print a one-line summary."""
    import zmq  # noqa: PLC0415

    from tiltstream.stream.recorder import Recorder  # noqa: PLC0415

    with stop_on_signals() as stop:
        try:
            recorder = Recorder(
                args.bind or args.connect, args.out, bind=bool(args.bind), curve=curve_from_args(args, bind=bool(args.bind)),
                overwrite=args.overwrite, ack_every=args.ack_every, memory_budget=args.memory_budget,
            )
        except zmq.ZMQError as exc:
            raise RuntimeError(f"{args.bind or args.connect}: {exc}") from None
        with recorder, contextlib.suppress(KeyboardInterrupt):
            recorder.run(stop, args.max_frames, args.idle_timeout, until_end=args.until_end)
    print(recorder.stats.summary())
    return 0
