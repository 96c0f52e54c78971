"""Helpers shared by the sub-commands: argparse value types (errors say what was expected and what
came) and the Ctrl-C/SIGTERM handling of the long-running commands."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["positive_int", "positive_float", "seconds", "finite_float", "nonneg_float", "positive_finite", "floats", "memory_size", "stop_on_signals", "refuse_same_file"]


def _number(kind: type, accept: Callable[[Any], bool], expected: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
positive_float = _number(float, lambda v: v > 0, "a positive number")
seconds = _number(float, lambda v: math.isfinite(v) and v >= 0, "a number of seconds >= 0")
finite_float = _number(float, math.isfinite, "a finite number")
nonneg_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
positive_finite = _number(float, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")


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


def _same_file(a: os.PathLike, b: os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)  # hard links, symlinks, other spellings
    except OSError:  # one of them does not exist (yet)
        return os.path.realpath(a) == os.path.realpath(b)


def refuse_same_file(out: os.PathLike, source: os.PathLike, *, option: str = "--out", what: str = "the input") -> None:
    """ValueError when ``out`` names the file ``source`` (writing it would destroy what is being read)."""
    if _same_file(out, source):
        raise ValueError(f"{option}: expected a file other than {what} ({source}), got {out}")


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C/SIGTERM; a second Ctrl-C raises KeyboardInterrupt."""
    stop = threading.Event()
    previous: dict[int, Any] = {}

    def on_signal(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
