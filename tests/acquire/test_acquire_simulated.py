"""Simulated microscope: frames, angles, times and metadata; real-time pacing; stopping."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from tiltstream.acquire import MemorySink
from tiltstream.acquire.simulated import SimulatedMicroscope, TemperatureRamp
from tiltstream.sim import TimingModel, golden_ratio_angles, make_phantom
from tiltstream.stream.messages import EndMsg, FrameMsg, StartMsg

SIZE = 16


def test_max_speed_publishes_the_planned_series_with_its_metadata():
    sink = MemorySink()
    ramp = TemperatureRamp(start_C=30.0, rate_C_per_s=0.5, limit_C=40.0)
    mic = SimulatedMicroscope("nanorod", sink=sink, size=SIZE, n_frames=8, dose=40.0, speed="max", seed=7,
                              tilt_range_deg=(-65.0, 60.0), drift_px_per_s=0.1, temperature=ramp, chunk_frames=3)
    stats = mic.run()
    assert stats.n_frames == 8 and not stats.stopped
    msgs = sink.messages
    assert [type(m) for m in msgs] == [StartMsg] + [FrameMsg] * 8 + [EndMsg]
    start, frames, end = msgs[0], msgs[1:-1], msgs[-1]
    assert end.n_frames == 8 and end.reason == "complete" and end.stream_id == stats.stream_id
    assert [f.seq for f in frames] == list(range(8))
    angles = np.array([f.angle_deg for f in frames])
    np.testing.assert_array_equal(angles, golden_ratio_angles(8, lo=-65.0, hi=60.0))
    times = np.array([f.t_s for f in frames])
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(times, TimingModel().times(angles)[1])
    np.testing.assert_allclose([f.dose_e_per_A2 for f in frames], 40.0 * np.arange(1, 9))
    np.testing.assert_allclose([f.temperature_C for f in frames], np.minimum(30.0 + 0.5 * times, 40.0))
    assert all(f.data.shape == (SIZE, SIZE) and f.data.dtype == np.float32 for f in frames)
    assert len({f.data.tobytes() for f in frames}) == 8
    # start/1: geometry and the recipe that rebuilds the ground truth
    assert start.frame_shape == (SIZE, SIZE) and start.scheme == "golden"
    assert start.tilt_range_deg == (-65.0, 60.0) and start.pixel_nm == pytest.approx(mic.phantom.voxel_nm)
    recipe = start.experiment["simulation"]
    assert recipe["phantom"] == "nanorod" and recipe["size"] == SIZE and recipe["seed"] == 7
    truth = make_phantom(recipe["phantom"], size=recipe["size"], voxel_nm=recipe["voxel_nm"],
                         duration_s=recipe["duration_s"], static=recipe["static"])
    t = float(times[-1])
    np.testing.assert_allclose(truth.contrast(t, recipe["exponent"]), mic.truth(t))
    assert not np.allclose(mic.truth(0.0), mic.truth(t))  # dynamic: the particle changes


def test_frames_equal_the_offline_simulation_of_the_same_recipe():
    from tiltstream.sim.recipe import simulated_tilt_series, truth_from_record

    sink = MemorySink()
    SimulatedMicroscope("nanostar", sink=sink, size=SIZE, n_frames=5, dose=80.0, speed=0, seed=3,
                        jitter_px=0.4, chunk_frames=2).run()
    offline, recipe = simulated_tilt_series("nanostar", size=SIZE, n_frames=5, dose_e_per_A2=80.0, seed=3,
                                            jitter_px=0.4)
    np.testing.assert_array_equal(np.stack([f.data for f in sink.frames]), offline.frames)
    assert sink.starts[0].experiment["simulation"] == recipe
    np.testing.assert_array_equal(truth_from_record(recipe)(1.0), offline.truth(1.0))


def test_scaled_real_time_is_kept(virtual_clock, clocked_sink):
    speed = 25.0
    mic = SimulatedMicroscope("nanorod", sink=clocked_sink, size=SIZE, n_frames=6, speed=speed, seed=0,
                              chunk_frames=2, clock=virtual_clock)
    stats = mic.run(virtual_clock)
    sched = mic.schedule
    due = (sched.starts_s + sched.exposure_s) / speed  # end of exposure k, seconds after the clock started
    # start/1 goes out before the clock starts (once the first frame is rendered); the virtual clock
    # does not move while rendering, so frame k goes out exactly when due: never early, never late
    np.testing.assert_allclose(np.array(clocked_sink.at[1:-1]) - clocked_sink.at[0], due)
    assert stats.max_lag_s == pytest.approx(0.0, abs=1e-9) and stats.late_frames == 0
    assert stats.wall_s == pytest.approx(due[-1])


def test_stop_event_ends_the_series_early():
    stop = threading.Event()
    sink = MemorySink()
    mic = SimulatedMicroscope("nanorod", sink=sink, size=SIZE, n_frames=50, speed=25.0, seed=0)
    threading.Thread(target=lambda: sink.wait_for(3, timeout_s=10) and stop.set(), daemon=True).start()
    stats = mic.run(stop)
    assert stats.stopped and 2 <= stats.n_frames < 50
    assert sink.ends[0].reason == "stopped" and sink.ends[0].n_frames == stats.n_frames == len(sink.frames)


def test_render_errors_surface_and_end_the_series(monkeypatch):
    sink = MemorySink()
    mic = SimulatedMicroscope("nanorod", sink=sink, size=SIZE, n_frames=4, speed="max")

    def broken(*args, **kwargs):
        raise MemoryError("no room")

    monkeypatch.setattr(mic, "_render", broken)
    with pytest.raises(RuntimeError, match="rendering failed.*no room"):
        mic.run()
    assert sink.ends[0].reason.startswith("error: RuntimeError")


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="speed"):
        SimulatedMicroscope(sink=MemorySink(), size=SIZE, n_frames=2, speed=-1)
    with pytest.raises(ValueError, match="dose"):
        SimulatedMicroscope(sink=MemorySink(), size=SIZE, n_frames=2, dose=0.0)
    with pytest.raises(ValueError, match="n_frames"):
        SimulatedMicroscope(sink=MemorySink(), size=SIZE, n_frames=0)
    assert TemperatureRamp(20.0, -1.0, 5.0)(100.0) == 5.0
    assert math.isclose(TemperatureRamp(20.0, 2.0)(1.5), 23.0)
