"""The service's newest metrics (the SIRT's and the DIP's apart) and the traces over time.

:class:`MetricsState` has no lock and no Qt; the :class:`~tiltstream.viz.model.ViewModel` calls it
under its lock.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from tiltstream.stream.messages import FrameMsg, MetricsMsg
from tiltstream.viz.history import Trace
from tiltstream.viz.records import trace_group

__all__ = ["MetricsState", "MAX_TRACES"]

#: Most traces kept: the known metrics and a few dozen of a service's own; names beyond this are
#: not plotted (a publisher inventing names must not grow the monitor without bound).
MAX_TRACES = 64


class MetricsState:
    """``sirt``: the newest non-DIP metrics; ``dip``: the newest ``dip_*`` metrics and when they came
    (``dip_s``); one :class:`~tiltstream.viz.history.Trace` per plotted metric or frame field."""

    def __init__(self, trace_points: int) -> None:
        self.trace_points = int(trace_points)
        self.sirt: dict[str, float] = {}
        self.dip: dict[str, float] = {}
        self.dip_s: float | None = None
        self._traces: defaultdict[str, Trace] = defaultdict(lambda: Trace(self.trace_points))

    def on_metrics(self, msg: MetricsMsg, now: float) -> bool:
        """Take one ``metrics/1``; True when it carried DIP metrics (they close a DIP estimate)."""
        values = dict(msg.values)
        # The DIP's metrics come in messages of their own: keep them apart, so they do not blank
        # the SIRT's latency, frame counts and window between two SIRT updates.
        dip = {k: v for k, v in values.items() if k.startswith("dip_")}
        other = {k: v for k, v in values.items() if not k.startswith("dip_")}
        if other:
            self.sirt = other
        if dip:
            self.dip, self.dip_s = dip, now
        for name, value in values.items():
            if trace_group(name) is not None and (name in self._traces or len(self._traces) < MAX_TRACES):
                self._traces[name].append(msg.t_s, value)
        return bool(dip)

    def on_frame(self, msg: FrameMsg) -> None:
        """The frame's temperature and dose, when it has them, as traces."""
        for name in ("temperature_C", "dose_e_per_A2"):
            if getattr(msg, name) is not None:
                self._traces[name].append(msg.t_s, getattr(msg, name))

    def traces(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Name -> (t_s (N,), values (N,)) of every non-empty trace."""
        return {name: trace.arrays() for name, trace in self._traces.items() if len(trace)}
