"""Optional packages of the file readers, imported when a file needs them."""

from __future__ import annotations

import importlib
from os import PathLike
from types import ModuleType

from tiltstream.stream.errors import FileFormatError

__all__ = ["FORMATS_EXTRA", "require"]

#: how to install every optional reader package at once
FORMATS_EXTRA = "pip install 'tiltstream[formats]'"


def require(module: str, file: str | PathLike, what: str, *, package: str | None = None) -> ModuleType:
    """``module`` imported, or a FileFormatError on ``file`` saying what to install to read ``what``.

    ``package`` is the name to install where it differs from the module's (rosettasciio: rsciio).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise FileFormatError(file, "reader", f"the {package or module} package to read {what} ({FORMATS_EXTRA})",
                              f"ImportError: {e}") from None
