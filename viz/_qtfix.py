"""Work around PySide6 builds that drop a reference to ``None`` on every call of a void C++ method.

PySide6/shiboken6 6.12.0 on CPython 3.11 returns ``None`` from void methods without taking a new
reference (correct only from CPython 3.12, where ``None`` is immortal). Every ``painter.drawRect``,
``setPen``, ``rect.setWidth`` ... then lowers ``None``'s reference count by one; a monitor redrawing
at 20 Hz makes thousands of such calls per second and the interpreter aborts with "deallocating
None" within a minute. 6.11.x and earlier do not have the bug; the install should avoid 6.12.0 on
Python < 3.12.

:func:`install` detects the bug at run time (a few void calls, reference count before and after)
and, only where it is present, keeps ``None``, ``True`` and ``False`` from running out: it adds a
large cushion to their counts and :func:`top_up` (called on every display tick) restores what was
lost since. These objects are static singletons that are never freed, so raising their counts is
harmless; on an unaffected install both functions do nothing.
"""

from __future__ import annotations

import ctypes
import logging
import platform
import sys

__all__ = ["install", "top_up", "bug_present"]

log = logging.getLogger(__name__)

_CUSHION = 1 << 24  # ≈ 2 h of redraws even if top_up were never called
_SINGLETONS = (None, True, False)
_floor: dict[int, int] = {}
_checked = False


def bug_present() -> bool:
    """True when a void PySide6 call lowers ``None``'s reference count (see the module docstring)."""
    if platform.python_implementation() != "CPython" or sys.version_info >= (3, 12):
        return False
    from pyqtgraph.Qt import QtCore  # noqa: PLC0415

    rect = QtCore.QRectF(0.0, 0.0, 1.0, 1.0)
    before = sys.getrefcount(None)
    for _ in range(64):
        rect.setWidth(2.0)
    return sys.getrefcount(None) <= before - 32


def _add_refs(obj: object, n: int) -> None:
    # CPython < 3.12 object header: Py_ssize_t ob_refcnt comes first.
    ctypes.c_ssize_t.from_address(id(obj)).value += n


def install() -> bool:
    """Detect the bug once per process and, if present, protect the singletons; returns whether it is."""
    global _checked
    if _checked:
        return bool(_floor)
    _checked = True
    if not bug_present():
        return False
    for obj in _SINGLETONS:
        _add_refs(obj, _CUSHION)
        _floor[id(obj)] = sys.getrefcount(obj)
    log.warning("this PySide6 build (%s) leaks references to None on Python %d.%d; the monitor compensates, "
                "but prefer a PySide6-Essentials other than 6.12.0 on Python < 3.12",
                getattr(sys.modules.get("PySide6"), "__version__", "unknown"), *sys.version_info[:2])
    return True


def top_up() -> None:
    """Give back the references lost since the last call (no-op unless :func:`install` found the bug)."""
    if not _floor:
        return
    for obj in _SINGLETONS:
        lost = _floor[id(obj)] - sys.getrefcount(obj)
        if lost > 0:
            _add_refs(obj, lost)
