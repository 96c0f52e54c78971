"""The ``--curve*`` options shared by every sub-command that opens a socket.

One key pair per machine (``tiltstream keys DIR``). A command uses its own secret key
(``--curve-key NAME.key_secret``) for every socket it opens, in the role the socket has:

* a **bound** socket is a CURVE server: it also needs ``--curve-allowed DIR``, the folder of the
  public ``*.key`` files of the machines allowed to connect;
* a **connecting** socket is a CURVE client: it also needs ``--curve-server-key FILE``, the public
  ``*.key`` file of the machine it connects to.

A command that both binds and connects (``recon --connect`` binds its PUB for viewers) needs all
three. Without ``--curve-key`` the sockets are plain (and binding a non-loopback interface is
logged as a warning by the socket layer).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_curve_arguments", "curve_from_args"]


def add_curve_arguments(parser: argparse.ArgumentParser) -> Any:
    """Add ``--curve-key``, ``--curve-server-key`` and ``--curve-allowed`` to ``parser``; return the group."""
    g = parser.add_argument_group("CURVE encryption and authentication (see `tiltstream keys`)")
    g.add_argument("--curve-key", type=Path, default=None, metavar="FILE",
                   help="this machine's NAME.key_secret file; turns CURVE on for every socket")
    g.add_argument("--curve-server-key", type=Path, default=None, metavar="FILE",
                   help="for connecting sockets: the public NAME.key file of the machine connected to")
    g.add_argument("--curve-allowed", type=Path, default=None, metavar="DIR",
                   help="for bound sockets: folder of the public *.key files of the machines allowed to connect")
    return g


def curve_from_args(args: argparse.Namespace, *, bind: bool) -> Any:
    """CURVE settings for one socket from the ``--curve*`` options, or None without ``--curve-key``.

    ``bind=True`` gives the server side (:class:`~tiltstream.stream.sockets.CurveConfig`),
    ``bind=False`` the client side (:class:`~tiltstream.stream.sockets.CurveClientConfig`).
    Raises ValueError naming what is missing or wrong.
    """
    key = getattr(args, "curve_key", None)
    server_key = getattr(args, "curve_server_key", None)
    allowed = getattr(args, "curve_allowed", None)
    if key is None:
        given = [flag for flag, value in (("--curve-server-key", server_key), ("--curve-allowed", allowed)) if value]
        if given:
            raise ValueError(f"{'/'.join(given)}: expected --curve-key FILE too (this machine's *.key_secret)")
        return None
    from tiltstream.stream.sockets import CurveClientConfig, CurveConfig  # noqa: PLC0415

    key = Path(key)
    # the missing option first, then the files that are not there
    if bind and allowed is None:
        raise ValueError("--curve-key with a bound socket (--bind/--push/--pub): "
                         "expected --curve-allowed DIR too (public keys of the allowed clients)")
    if not bind and server_key is None:
        raise ValueError("--curve-key with --connect: expected --curve-server-key FILE too "
                         "(the public *.key of the machine connected to)")
    if not key.is_file():
        raise ValueError(f"--curve-key: expected a *.key_secret file, got {str(key)!r} (no such file)")
    if bind:
        if not Path(allowed).is_dir():
            raise ValueError(f"--curve-allowed: expected a folder of *.key files, got {str(allowed)!r} (no such folder)")
        return CurveConfig(key, Path(allowed))
    if not Path(server_key).is_file():
        raise ValueError(f"--curve-server-key: expected a public *.key file, got {str(server_key)!r} (no such file)")
    return CurveClientConfig(key, Path(server_key))
