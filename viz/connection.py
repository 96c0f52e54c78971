"""What the monitor is connected to and how the stream flows: arrivals, gaps, rates, latency, end.

:class:`ConnectionState` has no lock and no Qt; the :class:`~tiltstream.viz.model.ViewModel` calls it
under its lock and asks it for the :class:`~tiltstream.viz.records.Status` line.
"""

from __future__ import annotations

from tiltstream.stream.messages import EndMsg
from tiltstream.viz.metrics import MetricsState
from tiltstream.viz.records import ModelConfig, RateMeter, SeqGaps, Status, ViewData

__all__ = ["ConnectionState"]


class ConnectionState:
    """Arrival times, seq gaps, frame and display rates, end-to-end latency and notices.

    Parameters
    ----------
    config : the thresholds of the status line.
    recon_endpoint, frames_endpoint : what the monitor is connected to.
    started_s : when the monitor started (monotonic s).
    """

    def __init__(self, config: ModelConfig, recon_endpoint: str | None, frames_endpoint: str | None,
                 started_s: float) -> None:
        self.config = config
        self.recon_endpoint, self.frames_endpoint = recon_endpoint, frames_endpoint
        self.started_s = started_s
        self.rejected = 0
        self._display = RateMeter(2.0)
        self._n_displayed = 0
        self.reset()

    def reset(self, notice: str | None = None, now: float = 0.0) -> None:
        """A new series (``notice``: a sentence the status line shows for a while from ``now``)."""
        self.frame_gaps, self.update_gaps = SeqGaps(), SeqGaps()
        self.frames_count = 0
        self._progress = RateMeter(self.config.rate_window_s)
        self.last_progress_s: float | None = None
        self.last_recon_s: float | None = None
        self.last_any_s: float | None = None
        self.ended: EndMsg | None = None
        self._e2e_s: float | None = None
        self._e2e_key: tuple | None = None  # the view whose latency _e2e_s is
        self._notice = None if notice is None else (notice, now)

    def count_frames(self, count: int, now: float) -> None:
        """``count`` frames of the series exist (by the newest seq seen, here or in the service's metrics)."""
        if count > self.frames_count:
            self.frames_count = count
            self.last_progress_s = now
            self._progress.add(now, count)

    def note_displayed(self, view: ViewData | None, latency_s: float | None, now: float) -> None:
        """One panel refresh; ``latency_s``: the service's, for the end-to-end latency of live data drawn."""
        self._n_displayed += 1
        self._display.add(now, self._n_displayed)
        # measured when live data is first drawn: redrawing it later (a stopped stream) is no delay
        if view is not None and view.live and latency_s is not None and view.key != self._e2e_key:
            self._e2e_key = view.key
            self._e2e_s = float(latency_s) + max(0.0, now - view.received_s)

    def _state(self, now: float) -> tuple[str, str, str]:
        """(state, message, level) of the stream now."""
        cfg = self.config
        if self.last_any_s is None:
            where = self.recon_endpoint or self.frames_endpoint or "nothing"
            late = now - self.started_s > 3.0
            hint = " — is `tiltstream recon --pub` running there?" if late else ""
            return "waiting", f"Waiting for data from {where}{hint}", "warn" if late else "info"
        if self.ended is not None:
            e = self.ended
            return "ended", f"Series {e.stream_id[:8]} ended ({e.reason}, {e.n_frames} frames)", "info"
        if self.recon_endpoint and self.last_recon_s is not None and now - self.last_recon_s > cfg.silent_after_s:
            return "silent", (f"No messages from the reconstruction service for {now - self.last_recon_s:.0f} s"
                              " — stopped or disconnected?"), "error"
        if self.last_progress_s is not None and now - self.last_progress_s > cfg.stall_after_s:
            return "stalled", (f"No new frames for {now - self.last_progress_s:.0f} s — "
                               "stream stopped or acquisition paused"), "warn"
        return "live", "", "ok"

    def status(self, now: float, metrics: MetricsState, *, series_id: str | None, source: str,
               dip_available: bool) -> Status:
        """The status line now."""
        state, message, level = self._state(now)
        if self._notice is not None and now - self._notice[1] <= self.config.notice_s and level in ("ok", "info"):
            message, level = self._notice[0], "info"
        if level == "ok" and now - self.frame_gaps.last_gap_s < 5.0:
            # Skipped reconstruction updates are harmless (the display shows the newest anyway);
            # lost raw frames mean this viewer misses tilt angles: say so.
            message, level = "Viewer is dropping raw frames (network or this computer too slow)", "warn"
        m, dm = metrics.sirt, metrics.dip
        seen, lat = m.get("frames_seen"), m.get("latency_s")
        dip_frames, dip_steps, held = dm.get("dip_frames"), dm.get("dip_steps"), dm.get("dip_heldout_nrmse")
        return Status(
            recon_endpoint=self.recon_endpoint,
            frames_endpoint=self.frames_endpoint,
            state=state,
            series_id=series_id,
            frames_per_s=self._progress.rate(now),
            display_fps=self._display.rate(now),
            latency_s=None if lat is None else float(lat),
            end_to_end_s=self._e2e_s if self._e2e_s is not None else (None if lat is None else float(lat)),
            frames_seen=None if seen is None else int(seen),
            frames_dropped=self.frame_gaps.missing,
            updates_dropped=self.update_gaps.missing,
            rejected=self.rejected,
            message=message,
            level=level,
            source=source,
            dip_available=dip_available,
            dip_frames=None if dip_frames is None else int(dip_frames),
            dip_steps=None if dip_steps is None else int(dip_steps),
            dip_heldout_nrmse=None if held is None else float(held),
            dip_age_s=None if metrics.dip_s is None else max(0.0, now - metrics.dip_s),
            service_rejects={k.partition(".")[2]: int(v) for k, v in m.items() if k.startswith("rejected.") and v > 0},
        )
