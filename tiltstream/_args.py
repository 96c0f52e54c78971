"""argparse value types shared by the sub-commands (errors say what was expected and what came)."""

from __future__ import annotations

import argparse

__all__ = ["positive_int", "positive_float", "floats", "memory_size"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers like '10,20.5,30', got {text!r}") from None


def memory_size(text: str) -> int:
    """``"8G"``, ``"512M"`` or bytes -> bytes (``--memory-budget``)."""
    from tiltstream.stream.budget import parse_bytes  # noqa: PLC0415

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("memory size: ")) from None
