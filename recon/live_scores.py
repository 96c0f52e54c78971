"""Every live estimate scored against the ground truth at its own time (simulated series).

:class:`LiveScores` watches what the reconstruction service takes and publishes
(``ReconService(observer=scores.observe)``): the ``start/1`` of a simulated series carries the
simulation's recipe (``experiment["simulation"]``), from which the truth is rebuilt; every
``volume/1`` (streaming SIRT and online DIP) is scored against the truth at the time it shows
(``t_s``), block-averaged to the volume's size, in a thread of its own so the service never waits;
the operator signals in ``metrics/1`` (change, scores on unseen frames) are kept as traces.
:meth:`LiveScores.summary` answers what a scientist asks of a live run: how good was the live
SIRT, when did the DIP's first estimate come and when did it beat the SIRT, and how good was it when
the acquisition ended.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiltstream.recon.binning import block_mean
from tiltstream.recon.scoring import nrmse
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, StartMsg, VolumeMsg

__all__ = ["LiveScores", "Score", "TRACE_KEYS"]

log = logging.getLogger(__name__)

#: metrics/1 values kept as traces: the operator's signals and the scores on unseen frames
TRACE_KEYS = ("change_sigma", "sirt_predict_nrmse", "sirt_residual", "dip_heldout_nrmse")


@dataclass(frozen=True)
class Score:
    """One published volume: when it arrived (wall s after the first frame), the time it shows, its
    source, which DIP estimate it belongs to (-1 for the SIRT), and its NRMSE against the truth."""

    wall_s: float
    t_s: float
    source: str
    estimate: int
    nrmse: float
    before_end: bool


class LiveScores:
    """Scores of one live series. ``truth(t_s) -> (Z, Y, X)``; None: rebuilt from the ``start/1``."""

    def __init__(self, truth: Callable[[float], np.ndarray] | None = None, *,
                 clock: Callable[[], float] = time.monotonic):
        self.truth = truth
        self.clock = clock
        self.scores: list[Score] = []
        self.traces: dict[str, list[tuple[float, float]]] = {k: [] for k in TRACE_KEYS}
        self._t0: float | None = None
        self._end_wall: float | None = None
        self._dip_estimate = 0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="live-scores", daemon=True)
        self._thread.start()

    # -- the service's thread: cheap --------------------------------------------------------------
    def observe(self, msg: object) -> None:
        """A message the service took or published."""
        now = self.clock()
        if isinstance(msg, StartMsg):
            record = (msg.experiment or {}).get("simulation")
            if self.truth is None and isinstance(record, dict):
                self._queue.put(("truth", record))
        elif isinstance(msg, FrameMsg) and self._t0 is None:
            self._t0 = now
        elif isinstance(msg, EndMsg):
            self._end_wall = self._wall(now)
        elif isinstance(msg, VolumeMsg):
            est = self._dip_estimate if msg.source == "dip" else -1
            self._queue.put(("volume", (self._wall(now), float(msg.t_s), msg.source, est, msg.data,
                                        self._end_wall is None)))
        elif isinstance(msg, MetricsMsg):
            if any(k.startswith("dip_") for k in msg.values):
                self._dip_estimate += 1  # a DIP estimate's metrics follow its volumes
            for key in TRACE_KEYS:
                if key in msg.values:
                    self.traces[key].append((float(msg.t_s), float(msg.values[key])))

    def _wall(self, now: float) -> float:
        return 0.0 if self._t0 is None else now - self._t0

    # -- the scoring thread -----------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            kind, payload = item
            try:
                if kind == "truth":
                    from tiltstream.sim.recipe import truth_from_record  # noqa: PLC0415

                    self.truth = truth_from_record(payload)
                else:
                    self._score(*payload)
            except Exception as exc:  # noqa: BLE001 - a score is a by-product; the run goes on
                log.warning("live scores: %s: %s", type(exc).__name__, exc)

    def _score(self, wall_s: float, t_s: float, source: str, estimate: int, data: np.ndarray,
               before_end: bool) -> None:
        if self.truth is None:
            return
        ref = self.truth(t_s)
        factor = ref.shape[0] // data.shape[0] if data.shape[0] else 1
        ref = block_mean(ref, factor) if factor > 1 else ref
        self.scores.append(Score(wall_s, t_s, source, estimate, nrmse(data, ref), before_end))

    def close(self, timeout_s: float = 600.0) -> None:
        """Score what is queued and stop the scoring thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout_s)

    # -- answers ----------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Live SIRT and online DIP against the truth (NRMSE, each volume at its own time)."""
        sirt = [s for s in self.scores if s.source != "dip"]
        dip: dict[int, list[Score]] = {}
        for s in self.scores:
            if s.source == "dip":
                dip.setdefault(s.estimate, []).append(s)
        estimates = [(v[0].wall_s, float(np.mean([s.nrmse for s in v])), v[0].before_end) for _, v in sorted(dip.items())]
        out: dict[str, Any] = {"end_of_acquisition_wall_s": self._end_wall}
        if sirt:  # (the last is the estimate from every frame of the window at the end: no more come)
            out["live_sirt"] = {"volumes_scored": len(sirt), "mean_nrmse": float(np.mean([s.nrmse for s in sirt])),
                                "last_nrmse": sirt[-1].nrmse}
        if estimates:
            before = [e for e in estimates if e[2]]
            first_wall, first_err, _ = estimates[0]
            out["online_dip"] = {
                "estimates_scored": len(estimates),
                "first_estimate_wall_s": first_wall,
                "first_estimate_nrmse": first_err,
                "beats_live_sirt_wall_s": self._beats_sirt(estimates, sirt),
                "last_before_end_nrmse": before[-1][1] if before else None,
                "at_end_nrmse": estimates[-1][1],
            }
        return out

    @staticmethod
    def _beats_sirt(estimates: list[tuple[float, float, bool]], sirt: list[Score]) -> float | None:
        """Wall time of the first DIP estimate better than the live SIRT's latest volume before it."""
        for wall, err, _ in estimates:
            earlier = [s for s in sirt if s.wall_s <= wall]
            if earlier and err < earlier[-1].nrmse:
                return wall
        return None

    def rows(self) -> list[dict[str, Any]]:
        """Every score as a JSON-able row (error against wall time: the curves of a live run)."""
        return [{"wall_s": round(s.wall_s, 3), "t_s": round(s.t_s, 3), "source": s.source, "estimate": s.estimate,
                 "nrmse": round(s.nrmse, 5), "before_end": s.before_end} for s in self.scores]

    def trace_arrays(self) -> dict[str, dict[str, list[float]]]:
        """The traces as ``{name: {"t_s": [...], "value": [...]}}`` (JSON-able, for the 4-D result)."""
        return {k: {"t_s": [t for t, _ in v], "value": [x for _, x in v]} for k, v in self.traces.items() if v}
