"""Operator monitor (pyqtgraph): a Qt-free view model and Qt widgets.

Qt-free (importing these never imports Qt):

=============================  ===============================================================
:class:`ViewModel`             the monitor's state, fed by protocol messages (thread-safe)
:class:`ModelConfig`           its bounds and thresholds
:class:`StreamReceiver`        background thread: subscribes, fills a ViewModel
:func:`launch_monitor`         show the monitor, or render it headless to PNG / a movie
:func:`display_available`      whether a window can be shown here
:func:`orthoview_rgb`,         slice images and GIF/MP4 movies without Qt
:func:`write_movie`
=============================  ===============================================================

Qt (imported on first use): :class:`MonitorWindow` and the panels in :mod:`tiltstream.viz.widgets`.
"""

from __future__ import annotations

import importlib
from typing import Any

from tiltstream.viz.app import display_available, launch_monitor
from tiltstream.viz.export import orthoview_rgb, write_movie
from tiltstream.viz.model import ViewModel
from tiltstream.viz.receiver import StreamReceiver
from tiltstream.viz.records import CoverageData, FrameView, ModelConfig, Status, ViewData

__all__ = [
    "ViewModel",
    "ModelConfig",
    "ViewData",
    "FrameView",
    "CoverageData",
    "Status",
    "StreamReceiver",
    "launch_monitor",
    "display_available",
    "orthoview_rgb",
    "write_movie",
    "MonitorWindow",
]

_LAZY = {"MonitorWindow": "tiltstream.viz.window"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ImportError as exc:
            raise ImportError(f"tiltstream.viz.{name} needs pyqtgraph and a Qt binding "
                              f"(pip install pyqtgraph PySide6-Essentials): {exc}") from exc
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
