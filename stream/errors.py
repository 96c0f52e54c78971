"""The one error type of the file readers and writers."""

from __future__ import annotations

from os import PathLike

__all__ = ["FileFormatError"]


class FileFormatError(ValueError):
    """A file (or a set of files) that cannot be read as a tilt series or a result.

    The message has the form ``"<file>: <field>: expected <expected>, got <found>"`` so that a user
    can tell which file, which field in it, what was wanted and what was there. The four parts are
    also kept as attributes for programs (the CLI, tests).
    """

    def __init__(self, file: str | PathLike, field: str, expected: str, found: object) -> None:
        self.file = str(file)
        self.field = field
        self.expected = expected
        self.found = found
        super().__init__(f"{self.file}: {field}: expected {expected}, got {found}")
