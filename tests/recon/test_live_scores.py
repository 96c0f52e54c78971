"""LiveScores: every published volume scored against the truth at its own time."""

import numpy as np
import pytest

from tiltstream.recon.live_scores import LiveScores
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, StartMsg, VolumeMsg

SID = "a" * 32


def truth(t):
    """A particle that brightens with time: only the volume of time t matches truth(t)."""
    v = np.zeros((8, 8, 8), np.float32)
    v[2:6, 2:6, 2:6] = 1.0 + t
    return v


def volume(seq, t, source, data):
    return VolumeMsg(stream_id=SID, seq=seq, t_s=t, data=data, source=source, n_frames_used=4)


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_volumes_are_scored_at_the_time_they_show_and_dip_estimates_are_grouped():
    clock = Clock()
    scores = LiveScores(truth, clock=clock)
    scores.observe(FrameMsg(seq=0, stream_id=SID, angle_deg=0.0, t_s=0.0, exposure_s=0.1,
                            data=np.zeros((8, 8), np.float32)))
    clock.now += 5
    scores.observe(volume(0, 3.0, "sirt", truth(3.0) * 1.2))  # 20 % off at its own time
    clock.now += 5
    # a DIP estimate: two volumes (exact at their own times), then its metrics
    scores.observe(volume(1, 1.0, "dip", truth(1.0)))
    scores.observe(volume(2, 4.0, "dip", truth(4.0)))
    scores.observe(MetricsMsg(stream_id=SID, seq=0, t_s=4.0, values={"dip_heldout_nrmse": 0.05}))
    scores.observe(MetricsMsg(stream_id=SID, seq=1, t_s=4.5, values={"change_sigma": 2.5, "sirt_residual": 0.1}))
    clock.now += 5
    scores.observe(EndMsg(stream_id=SID, n_frames=1, reason="complete"))
    scores.observe(volume(3, 1.0, "dip", truth(2.0)))  # after the end, scored at t = 1: wrong time, off
    scores.observe(MetricsMsg(stream_id=SID, seq=2, t_s=5.0, values={"dip_heldout_nrmse": 0.04}))
    scores.close()
    s = scores.summary()
    assert s["end_of_acquisition_wall_s"] == pytest.approx(15.0)
    assert s["live_sirt"]["volumes_scored"] == 1 and s["live_sirt"]["mean_nrmse"] == pytest.approx(0.2, rel=1e-5)
    dip = s["online_dip"]
    assert dip["estimates_scored"] == 2 and dip["first_estimate_wall_s"] == pytest.approx(10.0)
    assert dip["first_estimate_nrmse"] == pytest.approx(0.0, abs=1e-6)
    assert dip["beats_live_sirt_wall_s"] == pytest.approx(10.0)
    assert dip["last_before_end_nrmse"] == pytest.approx(0.0, abs=1e-6)
    assert dip["at_end_nrmse"] == pytest.approx(np.linalg.norm(truth(2.0) - truth(1.0)) / np.linalg.norm(truth(1.0)))
    traces = scores.trace_arrays()
    assert traces["change_sigma"] == {"t_s": [4.5], "value": [2.5]}
    assert traces["dip_heldout_nrmse"]["value"] == [0.05, 0.04]


def test_truth_comes_from_the_simulation_recipe_in_start_and_binned_volumes_are_scored_binned():
    from tiltstream.recon.binning import block_mean
    from tiltstream.sim.recipe import simulated_tilt_series, truth_from_record

    _, record = simulated_tilt_series("nanorod", n_frames=4, size=16)
    exact = truth_from_record(record)
    scores = LiveScores()
    scores.observe(StartMsg(stream_id=SID, frame_shape=(16, 16), dtype="float32", scheme="golden",
                            experiment={"simulation": record}))
    scores.observe(volume(0, 1.0, "dip", block_mean(exact(1.0), 2)))  # a DIP volume binned ×2
    scores.close()
    assert len(scores.scores) == 1 and scores.scores[0].nrmse == pytest.approx(0.0, abs=1e-6)
