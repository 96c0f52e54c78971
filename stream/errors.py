"""The one error type of the file readers and writers."""

from __future__ import annotations

from contextlib import contextmanager
from os import PathLike
from typing import Iterator

__all__ = ["FileFormatError", "reading"]


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


class FileFormatError(ValueError):
    """A file (or a set of files) that cannot be read as a tilt series or a result.

    The message has the form ``"<file>: <field>: expected <expected>, got <found>"`` so that a user
    can tell which file, which field in it, what was wanted and what was there; it is always one
    line (line breaks in what a library reported are folded). The four parts are also kept as
    attributes for programs (the CLI, tests).
    """

    def __init__(self, file: str | PathLike, field: str, expected: str, found: object) -> None:
        self.file = str(file)
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{_one_line(self.file)}: {_one_line(field)}: expected {_one_line(expected)}, got {_one_line(found)}")


@contextmanager
def reading(file: str | PathLike, expected: str, field: str = "file") -> Iterator[None]:
    """Turn whatever a file library raises inside the block into a :class:`FileFormatError`.

    tifffile, mrcfile and h5py report damaged files with many exception types (IndexError,
    KeyError, struct.error, RuntimeError, OSError, ...); inside this block each becomes
    ``FileFormatError(file, field, expected, "<type>: <message>")``. FileFormatErrors pass
    unchanged, and so do MemoryError and the exceptions that are not ``Exception`` (Ctrl-C).
    """
    try:
        yield
    except (FileFormatError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 (the point of this block)
        raise FileFormatError(file, field, expected, f"{type(e).__name__}: {e}") from e
