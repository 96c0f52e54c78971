"""``tiltstream keys``: make this machine's CURVE key pair.

Usage::

    tiltstream keys ~/.tiltstream/keys [--name microscope]

writes ``NAME.key`` (public: copy it to the other machines) and ``NAME.key_secret`` (secret: stays
here, mode 0600). Existing files are never overwritten. See ``tiltstream._curve_args`` for which
file goes into which ``--curve*`` option.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from pathlib import Path
from typing import Any

__all__ = ["register", "cmd_keys", "make_keys"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _default_name() -> str:
    name = socket.gethostname().split(".")[0]
    return name if _NAME.match(name) else "tiltstream"


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("keys", help="make this machine's CURVE key pair (for the --curve* options)")
    s.add_argument("dir", type=Path, metavar="DIR", help="folder for the key files (made if missing)")
    s.add_argument("--name", default=None, metavar="NAME",
                   help="file stem: NAME.key and NAME.key_secret (default: this host's name)")
    s.set_defaults(func=cmd_keys)
    return s


def make_keys(folder: Path, name: str) -> tuple[Path, Path]:
    """Write ``folder/name.key`` and ``folder/name.key_secret`` (mode 0600); return (public, secret).

    Raises ValueError for a bad name or when either file exists already (nothing is overwritten).
    """
    import zmq.auth  # noqa: PLC0415

    if not _NAME.match(name):
        raise ValueError(f"--name: expected letters, digits, '_', '.', '-' (not starting with a symbol), got {name!r}")
    folder = Path(folder)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing:
        raise ValueError(f"expected no key files named {name!r} in {folder}, got {', '.join(existing)} "
                         "(refusing to overwrite; pick another --name or folder)")
    folder.mkdir(parents=True, exist_ok=True)
    old_umask = os.umask(0o077)  # the secret file is never readable by others, not even briefly
    try:
        made_public, made_secret = zmq.auth.create_certificates(str(folder), name)
    finally:
        os.umask(old_umask)
    os.chmod(made_secret, 0o600)
    os.chmod(made_public, 0o644)
    return Path(made_public), Path(made_secret)


def cmd_keys(args: argparse.Namespace) -> int:
    name = args.name or _default_name()
    public, secret = make_keys(args.dir, name)
    print(f"keys: public key  {public}  (copy to the other machines)")
    print(f"keys: secret key  {secret}  (mode 0600; never copy it)")
    print("keys: use them with every tiltstream command that opens a socket:")
    print(f"  --curve-key {secret}")
    print("  --curve-server-key PEER.key   when this machine connects (--connect): the public key of the peer")
    print("  --curve-allowed DIR           when it binds (--bind/--push/--pub): a folder of the peers' public")
    print(f"                                keys; put {public.name} into the allowed folder of each peer that")
    print("                                this machine connects to")
    return 0
