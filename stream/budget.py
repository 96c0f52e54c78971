"""Memory budgets: what a receiver may allocate because of what a peer announced.

No announced size (a ``start/1`` frame shape, a frame or volume part) may make a service allocate
more than it can afford. The budget is a number of bytes per service: ``TILTSTREAM_MEMORY_BUDGET``
(``"8G"``, ``"512M"``, plain bytes) where set, else a quarter of the machine's physical memory.
A receiving socket splits its budget over its queue (ZeroMQ drops a peer that sends a larger part);
the reconstruction engine admits a series only if its volume and window fit.
"""

from __future__ import annotations

import os
import re

from tiltstream.stream.messages import Limits

__all__ = ["MIN_BUDGET_BYTES", "default_budget_bytes", "parse_bytes", "part_limit_bytes"]

#: Smallest budget a service runs with, whatever the machine or the environment says.
MIN_BUDGET_BYTES = 64 * 2**20

_UNITS = {"": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_bytes(text: str | int) -> int:
    """``"8G"``, ``"512MiB"``, ``"1.5g"`` or a plain number of bytes -> bytes (binary units)."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        match = _SIZE.match(str(text))
        if match is None:
            raise ValueError(f"memory size: expected a size like '8G', '512M' or bytes, got {text!r}")
        value = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if value <= 0:
        raise ValueError(f"memory size: expected > 0 bytes, got {text!r}")
    return value


def _physical_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # not POSIX
        return None


def default_budget_bytes() -> int:
    """The environment's ``TILTSTREAM_MEMORY_BUDGET``, else a quarter of physical memory (≥ 64 MiB)."""
    env = os.environ.get("TILTSTREAM_MEMORY_BUDGET")
    if env:
        value = parse_bytes(env)
    else:
        physical = _physical_memory_bytes()
        value = physical // 4 if physical else 4 * 2**30
    return max(MIN_BUDGET_BYTES, value)


def part_limit_bytes(budget_bytes: int | None, queue_messages: int, limits: Limits) -> int:
    """Largest message part a receiver with ``queue_messages`` queued can take within its budget
    (None: :func:`default_budget_bytes`), and at most the largest array ``limits`` allows, in float64."""
    budget = default_budget_bytes() if budget_bytes is None else int(budget_bytes)
    protocol_max = 8 * max(limits.max_frame_elements, limits.max_volume_elements)
    return max(1, min(protocol_max, budget // (int(queue_messages) + 1)))
