"""``tiltstream recon``: the live reconstruction service.

Two threads. The intake thread receives the lossless frame stream (validated, sequence-checked,
rejects counted by the transport) and hands each message over at once, so intake never waits for a
reconstruction. The reconstruction thread folds everything that arrived since its last update into
the streaming SIRT (:class:`~.engine.ReconEngine`) in one update, then publishes slices, a
(downsampled) volume at a bounded rate and metrics on the viewer PUB socket (latest wins). A new
subscriber gets the latest state at once, and the latest volume is re-sent on a schedule while the
stream is idle, so a monitor that joins late never stares at an empty screen.

A restarted service resumes a series from its recording (``resume_from``): the last window of
frames is folded in before live frames are taken.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch

from tiltstream.recon.dip.online import OnlineDipConfig
from tiltstream.recon.dip_bridge import DipBridge
from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.recon.resume import resume_series
from tiltstream.recon.service_stats import ServiceStats
from tiltstream.stream.protocol import EndMsg, FrameMsg, ProtocolError, StartMsg
from tiltstream.stream.transport import DEFAULT_VIEWER_HWM, FrameReceiver, Publisher

__all__ = ["ReconService"]

log = logging.getLogger(__name__)


class ReconService:
    """Receive frames on ``frames_endpoint``, publish estimates on ``pub_endpoint``.

    Parameters
    ----------
    frames_endpoint : lossless frame stream (connect by default; ``bind=True`` to bind).
    pub_endpoint : viewer PUB socket (bound), e.g. ``"tcp://127.0.0.1:5557"``; None: publish nothing.
    config : engine settings.
    resume_from : a recording of the current series to fold in before live frames.
    resend_period_s : while idle, re-publish the latest state this often.
    dip : train the online DIP beside the streaming SIRT with these settings; None: no DIP.
    observer : called (on the reconstruction thread; keep it cheap) with every message the service
        takes and every one it publishes, e.g. :meth:`~.live_scores.LiveScores.observe`.
    """

    def __init__(
        self,
        frames_endpoint: str,
        pub_endpoint: str | None = None,
        config: EngineConfig | None = None,
        *,
        bind: bool = False,
        resume_from: str | Path | None = None,
        resend_period_s: float = 2.0,
        curve=None,
        pub_curve=None,
        dip: OnlineDipConfig | None = None,
        observer: Callable[[object], None] | None = None,
    ):
        self.engine = ReconEngine(config)
        self.receiver = FrameReceiver(frames_endpoint, bind=bind, curve=curve, name="recon", require_start=True,
                                      memory_budget=self.engine.config.memory_budget_bytes)
        # Room per subscriber for one DIP estimate (n_times volumes + its metrics, which close the
        # estimate for a monitor) beside the SIRT's slices and metrics: a burst is kept whole.
        hwm = DEFAULT_VIEWER_HWM if dip is None else max(DEFAULT_VIEWER_HWM, dip.n_times + 3)
        self.publisher = Publisher(pub_endpoint, curve=pub_curve, sndhwm=hwm) if pub_endpoint else None
        self.resend_period_s = float(resend_period_s)
        self.observer = observer
        self.stats = ServiceStats()
        self._inbox: deque[tuple[object, float]] = deque()
        # frames taken off the socket but not yet handled: at most a window's worth, so a sender
        # faster than the reconstruction meets backpressure (its sends wait) instead of this
        # process queueing without bound
        self._inbox_room = threading.BoundedSemaphore(max(8, self.engine.config.streaming.window_frames))
        self._wake = threading.Event()
        self._last_publish = 0.0
        self._end_seen = threading.Event()
        # the online DIP trains in its own thread; its estimates wait in the bridge for the recon
        # thread, which owns the PUB socket
        self.dip = DipBridge(dip, self.engine, self._wake) if dip is not None else None
        if resume_from is not None:
            resume_series(resume_from, self.engine, self.receiver, self.dip)

    @property
    def frames_endpoint(self) -> str:
        return self.receiver.endpoint

    @property
    def pub_endpoint(self) -> str | None:
        return None if self.publisher is None else self.publisher.endpoint

    # -- threads --------------------------------------------------------------------------------
    def _intake(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self._inbox_room.acquire(timeout=0.1):
                continue  # the inbox is full: leave the frames in the socket's queue
            msg = self.receiver.recv(timeout_ms=100)
            if not isinstance(msg, FrameMsg):
                self._inbox_room.release()
            if msg is None:
                continue
            self._inbox.append((msg, time.monotonic()))
            if isinstance(msg, FrameMsg):
                self.stats.frames_received += 1
            elif isinstance(msg, StartMsg):
                self.stats.series += 1
            elif isinstance(msg, EndMsg):
                self._end_seen.set()
            self._wake.set()

    def _publish(self, outputs: list[object], *, again: bool = False) -> None:
        """Send ``outputs``; ``again``: a re-send of messages published before (not observed twice)."""
        if self.observer is not None and not again:
            for m in outputs:
                self.observer(m)
        if self.publisher is None or not outputs:
            return
        for m in outputs:
            try:
                self.publisher.send(m)
            except ProtocolError as exc:  # never exit on a message of our own that fails the rules
                self.engine.rejected["publish_error"] += 1
                log.error("%s of series %s not published: %s", type(m).__name__, getattr(m, "stream_id", "?")[:8], exc)
                continue
            self.stats.published += 1
        self._last_publish = time.monotonic()

    def _step(self) -> None:
        while self._inbox:
            msg, t_recv = self._inbox.popleft()
            if isinstance(msg, FrameMsg):
                self._inbox_room.release()
            try:
                self.engine.handle(msg, received_at=t_recv)
                if self.observer is not None:
                    self.observer(msg)
                if self.dip is not None:
                    self.dip.take(msg)
            except (MemoryError, RuntimeError) as exc:  # never exit on a message
                self.engine.rejected["engine_error"] += 1
                log.error("%s of series %s could not be taken: %s", type(msg).__name__,
                          getattr(msg, "stream_id", "?")[:8], exc)
        self.engine.wire_rejects = self.receiver.stats().rejects_by_reason
        n_before = len(self.engine.latencies_s)
        outputs = self._engine_step()
        if outputs:
            self.stats.record_update(outputs[-1].values, self.engine.latencies_s[n_before:])
        self._publish(outputs)
        if self.publisher is not None:
            joined = self.publisher.poll_subscriptions()
            idle = time.monotonic() - self._last_publish > self.resend_period_s
            if (joined or idle) and self.engine.estimator is not None:
                self._publish(self._engine_step(force_volume=True))
            if joined and self.dip is not None and self.dip.last:
                self._publish(self.dip.last, again=True)
        self._publish_dip()

    def _engine_step(self, *, force_volume: bool = False) -> list[object]:
        """``engine.step``; an error of the estimate (e.g. slab workers lost beyond repair) is counted
        and logged (the first, then every 100th) and the service goes on taking frames."""
        try:
            return self.engine.step(force_volume=force_volume)
        except (MemoryError, RuntimeError, OSError, ArithmeticError, ValueError) as exc:
            self.engine.rejected["engine_error"] += 1
            n = self.engine.rejected["engine_error"]
            if n == 1 or n % 100 == 0:
                log.error("update of series %s failed (%d so far): %s: %s", (self.engine.stream_id or "?")[:8], n,
                          type(exc).__name__, exc)
            self.engine.stop_refining()
            return []

    def _publish_dip(self) -> None:
        if self.dip is not None:
            for burst in self.dip.outputs():
                self._publish(burst)
            self.stats.dip_estimates = self.dip.published

    def run(
        self,
        stop_event: threading.Event | None = None,
        *,
        until_end: bool = False,
        idle_timeout_s: float | None = None,
    ) -> ServiceStats:
        """Serve until ``stop_event`` is set, an end/1 arrives (``until_end``), or nothing arrived for
        ``idle_timeout_s`` seconds. Returns the statistics."""
        stop = stop_event or threading.Event()
        threads_before = torch.get_num_threads()
        if self.engine.config.cpu_threads:
            torch.set_num_threads(self.engine.config.cpu_threads)
        intake_stop = threading.Event()
        intake = threading.Thread(target=self._intake, args=(intake_stop,), name="recon-intake", daemon=True)
        intake.start()
        if self.dip is not None:
            self.dip.start()
        last_activity = time.monotonic()
        try:
            while not stop.is_set():
                self._wake.wait(0.0 if self.engine.refining else 0.1)
                self._wake.clear()
                if self._inbox:  # (a DIP estimate also wakes the loop, but is no frame activity)
                    last_activity = time.monotonic()
                self._step()
                if until_end and self._end_seen.is_set() and not self._inbox and not self.engine.refining:
                    self._publish(self._engine_step(force_volume=True))
                    if self.dip is not None:  # a last estimate from every frame of the series
                        self.dip.finish()
                        self._publish_dip()
                    break
                if idle_timeout_s is not None and time.monotonic() - last_activity > idle_timeout_s:
                    log.info("no frames for %.1f s: stopping", idle_timeout_s)
                    break
        finally:
            if self.dip is not None:
                self.dip.stop()
            torch.set_num_threads(threads_before)
            intake_stop.set()
            intake.join(timeout=2.0)
            self.stats.rejected_by_reason = dict(self.receiver.stats().rejects_by_reason)
            self.stats.frames_rejected_by_engine = int(sum(self.engine.rejected.values()))
        return self.stats

    def close(self) -> None:
        self.engine.close()
        self.receiver.close()
        if self.publisher is not None:
            self.publisher.close()

    def __enter__(self) -> "ReconService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
