"""Resume a live series from its recording: a restarted service goes on where it stopped.

The last window of recorded frames is folded into the engine's streaming SIRT and refined (four
sweeps over the window), the online DIP gets every recorded frame, and the receiver is told which
series and seq to expect next, so the live frames that follow are neither refused nor counted lost.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from tiltstream.recon.dip_bridge import DipBridge
from tiltstream.recon.engine import ReconEngine
from tiltstream.stream.protocol import FrameMsg, StartMsg
from tiltstream.stream.transport import FrameReceiver

__all__ = ["resume_series"]

log = logging.getLogger(__name__)


def resume_series(path: str | Path, engine: ReconEngine, receiver: FrameReceiver, dip: DipBridge | None = None) -> str:
    """Fold the recording at ``path`` into ``engine`` (and ``dip``); returns the series' stream id."""
    from tiltstream.stream.readers import read_series  # noqa: PLC0415

    path = Path(path)
    series = read_series(path)
    meta = series.metadata
    sid = str(meta.get("stream_id") or meta.get("experiment", {}).get("stream_id") or f"resumed-{path.stem}")
    keep = engine.config.streaming.window_frames
    first = max(0, series.n_frames - keep)
    engine.handle(StartMsg(stream_id=sid, frame_shape=series.frame_shape, dtype="float32",
                           scheme=str(meta.get("scheme", "unknown")), pixel_nm=series.pixel_nm))
    if dip is not None:
        dip.take_recorded(sid, series.frame_shape, series.pixel_nm, series.frames, series.angles_deg, series.times_s)
    for i in range(first, series.n_frames):
        engine.handle(FrameMsg(seq=i, stream_id=sid, angle_deg=float(series.angles_deg[i]),
                               t_s=float(series.times_s[i]), exposure_s=0.0,
                               data=np.ascontiguousarray(series.frames[i], dtype=np.float32)))
    seqs = series.extra.get("seq")  # a tiltstream recording numbers its frames; other files do not
    receiver.expect_series(sid, None if seqs is None or not len(seqs) else int(np.max(seqs)))
    engine.step()
    engine.estimator.update(steps=4 * engine.config.streaming.sweep_steps(keep))
    log.info("resumed series %s from %s: last %d of %d frames", sid[:8], path, series.n_frames - first,
             series.n_frames)
    return sid
