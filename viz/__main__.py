"""``python -m tiltstream.viz --connect RECON_EP [...]``: the monitor without the tiltstream CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from tiltstream.viz.app import add_view_arguments, run_from_args


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tiltstream.viz", description="tiltstream operator monitor")
    add_view_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run_from_args(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"view: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
