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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tiltstream.recon.dip.online import DipEstimate, OnlineDip, OnlineDipConfig
from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, StartMsg, VolumeMsg
from tiltstream.stream.transport import DEFAULT_VIEWER_HWM, FrameReceiver, Publisher

__all__ = ["ReconService", "ServiceStats"]

log = logging.getLogger(__name__)


@dataclass
class ServiceStats:
    """What the service did; ``latencies_s`` are receive → estimate-updated times per frame."""

    frames_received: int = 0
    updates: int = 0
    published: int = 0
    series: int = 0
    update_s: list[float] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    frames_rejected_by_engine: int = 0
    dip_estimates: int = 0
    align_shifts_px: list[tuple[float, float]] = field(default_factory=list)  # (dy, du) per update, --align

    def summary(self) -> dict[str, float | int]:
        def pct(v: list[float], q: float) -> float:
            return float(np.percentile(v, q)) if v else float("nan")

        return {
            "frames_received": self.frames_received,
            "updates": self.updates,
            "series": self.series,
            "messages_published": self.published,
            "messages_rejected": int(sum(self.rejected_by_reason.values())),
            "frames_rejected": self.frames_rejected_by_engine,
            "dip_estimates": self.dip_estimates,
            "update_ms_p50": 1e3 * pct(self.update_s, 50),
            "latency_ms_p50": 1e3 * pct(self.latencies_s, 50),
            "latency_ms_p99": 1e3 * pct(self.latencies_s, 99),
            **({"align_shift_px_max": float(np.max(np.abs(self.align_shifts_px)))} if self.align_shifts_px else {}),
        }


class ReconService:
    """Receive frames on ``frames_endpoint``, publish estimates on ``pub_endpoint``.

    Parameters
    ----------
    frames_endpoint : lossless frame stream (connect by default; ``bind=True`` to bind).
    pub_endpoint : viewer PUB socket (bound), e.g. ``"tcp://127.0.0.1:5557"``; None: publish nothing.
    config : engine settings.
    resume_from : a recording of the current series to fold in before live frames.
    resend_period_s : while idle, re-publish the latest state this often.
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
    ):
        self.engine = ReconEngine(config)
        self.receiver = FrameReceiver(frames_endpoint, bind=bind, curve=curve, name="recon", require_start=True,
                                      memory_budget=self.engine.config.memory_budget_bytes)
        # Room per subscriber for one DIP estimate (n_times volumes + its metrics, which close the
        # estimate for a monitor) beside the SIRT's slices and metrics: a burst is kept whole.
        hwm = DEFAULT_VIEWER_HWM if dip is None else max(DEFAULT_VIEWER_HWM, dip.n_times + 3)
        self.publisher = Publisher(pub_endpoint, curve=pub_curve, sndhwm=hwm) if pub_endpoint else None
        self.resend_period_s = float(resend_period_s)
        self.stats = ServiceStats()
        self._inbox: deque[tuple[object, float]] = deque()
        self._wake = threading.Event()
        self._last_outputs: list[object] = []
        self._last_publish = 0.0
        self._end_seen = threading.Event()
        # the online DIP trains in its own thread; its estimates wait here for the recon thread,
        # which owns the PUB socket
        self.dip = OnlineDip(dip, on_estimate=self._dip_ready) if dip is not None else None
        self._dip_out: deque[DipEstimate] = deque(maxlen=2)
        self._last_dip: list[object] = []
        if resume_from is not None:
            self._resume(Path(resume_from))

    @property
    def frames_endpoint(self) -> str:
        return self.receiver.endpoint

    @property
    def pub_endpoint(self) -> str | None:
        return None if self.publisher is None else self.publisher.endpoint

    # -- resume ---------------------------------------------------------------------------------
    def _resume(self, path: Path) -> None:
        from tiltstream.stream.readers import read_series  # noqa: PLC0415

        series = read_series(path)
        meta = series.metadata
        sid = str(meta.get("stream_id") or meta.get("experiment", {}).get("stream_id") or f"resumed-{path.stem}")
        keep = self.engine.config.streaming.window_frames
        first = max(0, series.n_frames - keep)
        self.engine.handle(StartMsg(stream_id=sid, frame_shape=series.frame_shape, dtype="float32",
                                    scheme=str(meta.get("scheme", "unknown")), pixel_nm=series.pixel_nm))
        if self.dip is not None:  # the DIP takes the whole recorded series, not only the last window
            self.dip.start_series(sid, series.frame_shape, series.pixel_nm)
            for i in range(first):
                self.dip.add_frame(series.frames[i], angle_deg=float(series.angles_deg[i]),
                                   t_s=float(series.times_s[i]), stream_id=sid)
        for i in range(first, series.n_frames):
            self.engine.handle(FrameMsg(seq=i, stream_id=sid, angle_deg=float(series.angles_deg[i]),
                                        t_s=float(series.times_s[i]), exposure_s=0.0,
                                        data=np.ascontiguousarray(series.frames[i], dtype=np.float32)))
        seqs = series.extra.get("seq")  # a tiltstream recording numbers its frames; other files do not
        self.receiver.expect_series(sid, None if seqs is None or not len(seqs) else int(np.max(seqs)))
        self.engine.step()
        passes = 4 * -(-keep // self.engine.config.streaming.subset_size)  # four sweeps over the window
        self.engine.estimator.update(steps=passes)
        log.info("resumed series %s from %s: last %d of %d frames", sid[:8], path, series.n_frames - first,
                 series.n_frames)

    # -- threads --------------------------------------------------------------------------------
    def _intake(self, stop: threading.Event) -> None:
        while not stop.is_set():
            msg = self.receiver.recv(timeout_ms=100)
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

    def _publish(self, outputs: list[object]) -> None:
        if self.publisher is None or not outputs:
            return
        for m in outputs:
            self.publisher.send(m)
        self.stats.published += len(outputs)
        self._last_outputs = outputs
        self._last_publish = time.monotonic()

    def _step(self) -> None:
        while self._inbox:
            msg, t_recv = self._inbox.popleft()
            try:
                self.engine.handle(msg, received_at=t_recv)
                self._to_dip(msg)
            except (MemoryError, RuntimeError) as exc:  # never exit on a message
                self.engine.rejected["engine_error"] += 1
                log.error("%s of series %s could not be taken: %s", type(msg).__name__,
                          getattr(msg, "stream_id", "?")[:8], exc)
        self.engine.wire_rejects = self.receiver.stats().rejects_by_reason
        n_before = len(self.engine.latencies_s)
        outputs = self.engine.step()
        if outputs:
            self.stats.updates += 1
            metrics = outputs[-1].values
            if "update_s" in metrics:
                self.stats.update_s.append(metrics["update_s"])
            if "align_du_px" in metrics and self.engine.latencies_s[n_before:]:  # a frame was aligned
                self.stats.align_shifts_px.append((metrics["align_dy_px"], metrics["align_du_px"]))
            self.stats.latencies_s.extend(self.engine.latencies_s[n_before:])
        self._publish(outputs)
        if self.publisher is not None:
            joined = self.publisher.poll_subscriptions()
            idle = time.monotonic() - self._last_publish > self.resend_period_s
            if (joined or idle) and self.engine.estimator is not None:
                self._publish(self.engine.step(force_volume=True))
            if joined and self._last_dip:
                self._publish(self._last_dip)
        self._publish_dip()

    # -- online DIP -----------------------------------------------------------------------------
    def _to_dip(self, msg: object) -> None:
        if self.dip is None:
            return
        if msg.stream_id != self.engine.stream_id:
            return  # a series the engine refused (over budget), or frames without their start/1
        if isinstance(msg, StartMsg):
            self.dip.start_series(msg.stream_id, tuple(msg.frame_shape), msg.pixel_nm)
        elif isinstance(msg, FrameMsg) and msg.stream_id == self.dip.stream_id:
            self.dip.add_frame(msg.data, angle_deg=float(msg.angle_deg), t_s=float(msg.t_s), stream_id=msg.stream_id)

    def _dip_ready(self, estimate: DipEstimate) -> None:
        self._dip_out.append(estimate)  # (training thread) latest wins: at most two wait
        self._wake.set()

    def _publish_dip(self) -> None:
        """Publish waiting DIP estimates: one volume/1 per time (``source="dip"``) and dip metrics."""
        while self._dip_out:
            est = self._dip_out.popleft()
            self.stats.dip_estimates += 1
            out: list[object] = []
            if est.stream_id != self.engine.stream_id:
                continue  # an estimate of a series that has ended meanwhile
            for t, vol in zip(est.times_s, est.volumes):
                out.append(VolumeMsg(stream_id=est.stream_id, seq=self.engine.next_seq("volume"), t_s=float(t),
                                     data=vol, source="dip", n_frames_used=est.n_frames, voxel_nm=est.pixel_nm))
            out.append(MetricsMsg(stream_id=est.stream_id, seq=self.engine.next_seq("metrics"),
                                  t_s=float(est.times_s[-1]), values=est.metrics()))
            self._publish(out)
            self._last_dip = out

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
                    self._publish(self.engine.step(force_volume=True))
                    if self.dip is not None:  # a last estimate from every frame of the series
                        self.dip.stop()
                        self.dip.flush()
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
        self.receiver.close()
        if self.publisher is not None:
            self.publisher.close()

    def __enter__(self) -> "ReconService":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
