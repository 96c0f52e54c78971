"""The online DIP beside the live SIRT: which messages it takes, and what it publishes.

:class:`DipBridge` feeds the online DIP (:class:`~.dip.online.OnlineDip`, training in its own
thread) with the frames of the series the engine follows, and turns its estimates into protocol
messages (one ``volume/1`` per time with ``source="dip"``, then the DIP's ``metrics/1``, which closes
an estimate for a monitor). Estimates wait for the thread that owns the PUB socket; latest wins.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from tiltstream.recon.dip.online import DipEstimate, OnlineDip, OnlineDipConfig
from tiltstream.recon.engine import ReconEngine
from tiltstream.stream.protocol import FrameMsg, MetricsMsg, StartMsg, VolumeMsg

__all__ = ["DipBridge"]


class DipBridge:
    """The online DIP of one service: follows ``engine``'s series; ``wake`` is set when an estimate waits."""

    def __init__(self, config: OnlineDipConfig, engine: ReconEngine, wake: threading.Event):
        self.engine = engine
        self._wake = wake
        self.dip = OnlineDip(config, on_estimate=self._ready)
        self._waiting: deque[DipEstimate] = deque(maxlen=2)
        #: the messages of the latest published estimate (re-sent to a monitor that joins late)
        self.last: list[object] = []
        self.published = 0

    def _ready(self, estimate: DipEstimate) -> None:
        self._waiting.append(estimate)  # (training thread) at most two wait
        self._wake.set()

    def take(self, msg: object) -> None:
        """A message the engine has just taken: a start/1 or frame/1 of its series goes to the DIP."""
        if msg.stream_id != self.engine.stream_id:
            return  # a series the engine refused (over budget), or frames without their start/1
        if isinstance(msg, StartMsg):
            self.dip.start_series(msg.stream_id, tuple(msg.frame_shape), msg.pixel_nm)
        elif isinstance(msg, FrameMsg) and msg.stream_id == self.dip.stream_id:
            self.dip.add_frame(msg.data, angle_deg=float(msg.angle_deg), t_s=float(msg.t_s), stream_id=msg.stream_id)

    def take_recorded(self, stream_id: str, frame_shape: tuple[int, int], pixel_nm: float | None,
                      frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray) -> None:
        """A recorded series (resume): every frame, not only the SIRT's window."""
        self.dip.start_series(stream_id, frame_shape, pixel_nm)
        for frame, angle, t in zip(frames, angles_deg, times_s):
            self.dip.add_frame(frame, angle_deg=float(angle), t_s=float(t), stream_id=stream_id)

    def outputs(self) -> list[list[object]]:
        """The waiting estimates of the current series as message bursts (oldest first)."""
        bursts = []
        while self._waiting:
            est = self._waiting.popleft()
            if est.stream_id != self.engine.stream_id:
                continue  # an estimate of a series that has ended meanwhile
            out: list[object] = [
                VolumeMsg(stream_id=est.stream_id, seq=self.engine.next_seq("volume"), t_s=float(t), data=vol,
                          source="dip", n_frames_used=est.n_frames, voxel_nm=est.pixel_nm)
                for t, vol in zip(est.times_s, est.volumes)
            ]
            out.append(MetricsMsg(stream_id=est.stream_id, seq=self.engine.next_seq("metrics"),
                                  t_s=float(est.times_s[-1]), values=est.metrics()))
            bursts.append(out)
            self.published += 1
            self.last = out
        return bursts

    def start(self) -> None:
        self.dip.start()

    def finish(self) -> None:
        """Stop training and make a last estimate from every frame of the series."""
        self.dip.stop()
        self.dip.flush()

    def stop(self) -> None:
        self.dip.stop()

