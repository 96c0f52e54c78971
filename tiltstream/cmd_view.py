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
from typing import Any

__all__ = ["register", "cmd_view"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    from tiltstream.viz.app import add_view_arguments  # noqa: PLC0415 (Qt-free)

    s = subparsers.add_parser("view", help="operator monitor: live slices, raw frames, coverage, traces")
    add_view_arguments(s)
    s.set_defaults(func=cmd_view)
    return s


def cmd_view(args: argparse.Namespace) -> int:
    from tiltstream.viz.app import run_from_args  # noqa: PLC0415

    return run_from_args(args)
