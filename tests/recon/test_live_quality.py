"""The live estimate against the truth and against the offline windowed SIRT of the same frames.

The engine is driven as the service drives it at real speed: each frame is folded in, then the
estimate is refined while no frame arrives (``refining``). Volumes are scored at the time they show.
"""

import numpy as np
import pytest

from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import operator
from tiltstream.recon.scoring import nrmse
from tiltstream.recon.sirt import sirt
from tiltstream.recon.streaming import StreamingParams
from tiltstream.sim.recipe import simulated_tilt_series, truth_from_record
from tiltstream.stream.protocol import FrameMsg, MetricsMsg, SlicesMsg, StartMsg

SIZE, N, WINDOW = 32, 120, 32


@pytest.fixture(scope="module")
def dynamic():
    sim, record = simulated_tilt_series("nanorod", n_frames=N, size=SIZE, dose_e_per_A2=3000.0, seed=1)
    return sim, truth_from_record(record)


def run_live(sim, checkpoints):
    eng = ReconEngine(EngineConfig(streaming=StreamingParams(window_frames=WINDOW), device="cpu",
                                   update_budget_s=None, volume_period_s=0.0), clock=lambda: 0.0)
    eng.handle(StartMsg(stream_id="a" * 32, frame_shape=sim.frames.shape[1:], dtype="float32", scheme="golden"))
    live, published = {}, {}
    for i in range(N):
        eng.handle(FrameMsg(seq=i, stream_id="a" * 32, angle_deg=float(sim.angles_deg[i]),
                            t_s=float(sim.times_s[i]), exposure_s=0.1, data=sim.frames[i]))
        out = eng.step()
        while eng.refining:  # idle between frames
            out = eng.step()
        if i in checkpoints:
            live[i] = eng.estimator.volume()
            published[i] = out
    return live, published


def test_live_estimate_is_as_good_as_the_offline_windowed_sirt_of_the_same_frames(dynamic):
    sim, truth = dynamic
    checkpoints = list(range(WINDOW + 8, N, 16)) + [N - 1]
    live, published = run_live(sim, checkpoints)
    vol = VolumeGeometry((SIZE, SIZE, SIZE))
    live_err, offline_err = [], []
    for i in checkpoints:
        idx = np.arange(i + 1 - WINDOW, i + 1)
        t_own = float(np.mean(sim.times_s[idx]))  # what the window shows
        slices = next(m for m in published[i] if isinstance(m, SlicesMsg))
        assert slices.t_s == pytest.approx(t_own)  # published at the time it shows, not the newest frame's
        metrics = next(m for m in published[i] if isinstance(m, MetricsMsg))
        assert metrics.t_s == pytest.approx(sim.times_s[i]) and metrics.values["estimate_t_s"] == pytest.approx(t_own)
        A = operator(vol, ProjectionGeometry(sim.angles_deg[idx], sim.frames.shape[1:]), device="cpu")
        offline = sirt(A, sim.frames[idx], 100)
        live_err.append(nrmse(live[i], truth(t_own)))
        offline_err.append(nrmse(offline, truth(t_own)))
    assert np.mean(live_err) <= 1.3 * np.mean(offline_err), (live_err, offline_err)
    # scored at the newest frame's time instead, the same estimate is far worse: the particle moved on
    late = [nrmse(live[i], truth(float(sim.times_s[i]))) for i in checkpoints]
    assert np.mean(late) > 1.2 * np.mean(live_err)


def test_change_signal_rises_when_the_particle_changes():
    """A static particle, then a jump: the new frame's residual against the model, in noise units, rises."""
    sim, _ = simulated_tilt_series("nanorod", n_frames=60, size=24, dose_e_per_A2=3000.0, static=True, seed=2)
    eng = ReconEngine(EngineConfig(streaming=StreamingParams(window_frames=40), device="cpu",
                                   update_budget_s=None), clock=lambda: 0.0)
    eng.handle(StartMsg(stream_id="b" * 32, frame_shape=sim.frames.shape[1:], dtype="float32", scheme="golden"))
    change = []
    for i in range(60):
        data = sim.frames[i] * (1.0 if i < 50 else 1.5)  # the particle's contrast jumps at frame 50
        eng.handle(FrameMsg(seq=i, stream_id="b" * 32, angle_deg=float(sim.angles_deg[i]),
                            t_s=float(sim.times_s[i]), exposure_s=0.1, data=data))
        out = eng.step()
        while eng.refining:
            eng.step()
        change.append(out[-1].values.get("change_sigma", np.nan))
    steady, jump = np.nanmedian(change[30:50]), change[50]
    assert np.isnan(change[0])  # no model yet, no prediction
    assert np.isfinite(steady) and jump > 3 * steady, (steady, jump)
