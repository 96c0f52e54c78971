"""The time slider over two reconstructions: which one is shown, and which of its volumes.

:class:`Timeline` holds the streaming SIRT's history (:class:`~tiltstream.viz.history.VolumeHistory`,
one volume per published update) and the DIP's newest 4-D estimate
(:class:`~tiltstream.viz.history.EstimateHistory`, volumes at times spread over the series), the
reconstruction chosen, follow-live, and the position scrubbed to. It has no lock of its own: the
:class:`~tiltstream.viz.model.ViewModel` calls it under its lock.

Positions are remembered the way each history changes: in the SIRT history by publication number
(the volume stays shown while newer ones arrive, until it is evicted), in the DIP estimate by time
(a newer estimate replaces every volume; the view moves to the new volume closest in time).
"""

from __future__ import annotations

import numpy as np

from tiltstream.viz.history import EstimateHistory, VolumeEntry, VolumeHistory
from tiltstream.viz.records import SOURCES, ModelConfig

__all__ = ["Timeline"]


def _nearest(times: np.ndarray, t_s: float) -> int:
    """Position in ``times`` (not empty) of the one closest to ``t_s`` (the later one on a tie)."""
    return int(len(times) - 1 - np.argmin(np.abs(times[::-1] - t_s)))


class Timeline:
    """Reconstruction shown and time-slider position; see the module docstring.

    Attributes
    ----------
    sirt : the streaming SIRT's volumes (and those of any other source but ``"dip"``).
    dip : the DIP's newest estimate.
    wanted : the reconstruction chosen (:data:`~tiltstream.viz.records.SOURCES`); :meth:`source`
        says which is shown.
    follow_live : show the newest volume (True) or the one scrubbed to.
    has_live : the SIRT's live slices arrived (then the SIRT has data even without a volume).
    """

    def __init__(self, config: ModelConfig) -> None:
        self.sirt = VolumeHistory(config.history_volumes, config.history_bytes)
        self.dip = EstimateHistory(config.dip_volumes, config.dip_bytes)
        self.wanted = "sirt"
        self.reset()

    def reset(self) -> None:
        """A new series: empty both histories and follow live (the choice of reconstruction stays)."""
        self.sirt.clear()
        self.dip.clear()
        self.follow_live = True
        self.has_live = False
        self._viewed_seq: int | None = None
        self._viewed_t: float | None = None

    def add(self, entry: VolumeEntry) -> None:
        """File a published volume under its reconstruction."""
        if entry.source == "dip":
            self.dip.append(entry)
            return
        h = self.sirt
        replaced_viewed = not self.follow_live and len(h) and h[-1].seq == self._viewed_seq
        if not h.append(entry) and replaced_viewed:
            self._viewed_seq = entry.seq  # the service refined the volume being looked at

    # -- which reconstruction ----------------------------------------------------------------------
    def source(self) -> str:
        """The chosen reconstruction when it has data, else the other one when that has, else the chosen."""
        has = {"sirt": len(self.sirt) > 0 or self.has_live, "dip": len(self.dip) > 0}
        if has[self.wanted] or not any(has.values()):
            return self.wanted
        return "dip" if self.wanted == "sirt" else "sirt"

    def set_source(self, name: str) -> None:
        """Choose ``name``; when scrubbed back, stay at the time shown (the closest volume of ``name``)."""
        if name not in SOURCES:
            raise ValueError(f"source: expected one of {', '.join(SOURCES)}, got {name!r}")
        i = None if self.follow_live else self.index()
        t = None if i is None else self.entries()[i].t_s
        self.wanted = name
        if t is not None and len(self.entries()):
            self._remember(_nearest(self.entries().times(), t))

    def entries(self) -> VolumeHistory | EstimateHistory:
        """The volumes the slider runs over: those of the reconstruction shown, oldest time first."""
        return self.dip if self.source() == "dip" else self.sirt

    # -- slider ------------------------------------------------------------------------------------
    def _remember(self, i: int) -> None:
        if self.source() == "dip":
            self._viewed_t = self.dip[i].t_s
        else:
            self._viewed_seq = self.sirt[i].seq

    def index(self) -> int | None:
        """Slider position of the volume shown (the newest when following live); None when empty."""
        entries = self.entries()
        n = len(entries)
        if n == 0:
            return None
        if self.follow_live:
            return n - 1
        if entries is self.dip:
            return n - 1 if self._viewed_t is None else _nearest(self.dip.times(), self._viewed_t)
        if self._viewed_seq is None:
            return n - 1
        i = self.sirt.index_of_seq(self._viewed_seq)
        return 0 if i is None else i  # evicted while viewed: the oldest one left

    def set_index(self, i: int) -> None:
        """Show entry ``i``; the newest entry turns follow-live back on."""
        n = len(self.entries())
        if n == 0:
            return
        i = min(max(int(i), 0), n - 1)
        self.follow_live = i == n - 1
        self._remember(i)

    def set_follow_live(self, on: bool) -> None:
        """Follow the newest volume (True), or stay on the one shown now (False)."""
        n = len(self.entries())
        if not on and self.follow_live and n:
            self._remember(n - 1)
        self.follow_live = bool(on)
