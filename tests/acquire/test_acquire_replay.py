"""Replay of recorded files: exact frames/angles/times, pacing, backpressure, stopping."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tiltstream.acquire import MemorySink
from tiltstream.acquire.replay import replay
from tiltstream.stream import TiltSeries, write_series
from tiltstream.stream.messages import EndMsg, FrameMsg, StartMsg

N = 7


@pytest.fixture
def recording(tmp_path, rng):
    times = np.cumsum(rng.uniform(0.08, 0.15, N))
    series = TiltSeries(
        frames=rng.normal(5.0, 2.0, (N, 37, 31)).astype(np.float32),
        angles_deg=rng.uniform(-70, 70, N),
        times_s=times,
        exposure_s=np.full(N, 0.05),
        pixel_nm=0.42,
        extra={"dose_e_per_A2": np.cumsum(np.full(N, 12.5)), "temperature_C": 300.0 + times * 2.0},
        metadata={"scheme": "golden", "sample": {"name": "Au@Ag", "batch": 3}, "shape_note": (1, 2)},
    )
    path = tmp_path / "run.h5"
    write_series(path, series)
    return path, series


def test_replay_reproduces_the_recording_exactly(recording):
    path, series = recording
    sink = MemorySink()
    stats = replay(path, sink, speed="max")
    msgs = sink.messages
    assert [type(m) for m in msgs] == [StartMsg] + [FrameMsg] * N + [EndMsg]
    frames = msgs[1:-1]
    np.testing.assert_array_equal(np.stack([f.data for f in frames]), series.frames)
    np.testing.assert_array_equal([f.angle_deg for f in frames], series.angles_deg)
    np.testing.assert_array_equal([f.t_s for f in frames], series.times_s)
    np.testing.assert_array_equal([f.exposure_s for f in frames], series.exposure_s)
    np.testing.assert_array_equal([f.dose_e_per_A2 for f in frames], series.extra["dose_e_per_A2"])
    np.testing.assert_array_equal([f.temperature_C for f in frames], series.extra["temperature_C"])
    assert [f.seq for f in frames] == list(range(N))
    start = msgs[0]
    assert start.frame_shape == (37, 31) and start.pixel_nm == pytest.approx(0.42) and start.scheme == "golden"
    assert start.experiment["sample"] == {"name": "Au@Ag", "batch": 3}
    assert start.experiment["replay"]["source"] == str(path) and start.experiment["replay"]["speed"] == "max"
    assert msgs[-1].n_frames == N and msgs[-1].reason == "complete"
    assert stats.n_frames == N and not stats.stopped and stats.stream_id == start.stream_id


@pytest.mark.parametrize("speed", [1.0, 2.0])
def test_replay_keeps_the_frame_times_at_the_given_speed(recording, speed, virtual_clock, clocked_sink):
    path, series = recording
    stats = replay(path, clocked_sink, speed=speed, clock=virtual_clock, stop_event=virtual_clock)
    # start/1 goes out just before the replay clock starts: frame k is due (t_k - t_0)/speed after it,
    # and on the virtual clock (which moves only while the replay waits) it goes out exactly then
    elapsed = np.array(clocked_sink.at[1:-1]) - clocked_sink.at[0]
    np.testing.assert_allclose(elapsed, (series.times_s - series.times_s[0]) / speed)
    assert stats.max_lag_s == pytest.approx(0.0, abs=1e-9) and not stats.stopped


def test_replay_from_a_later_frame(recording):
    path, series = recording
    sink = MemorySink()
    replay(path, sink, speed="max", start_frame=4)
    assert [f.seq for f in sink.frames] == [0, 1, 2]
    np.testing.assert_array_equal([f.t_s for f in sink.frames], series.times_s[4:])
    assert sink.starts[0].experiment["replay"]["start_frame"] == 4
    with pytest.raises(ValueError, match="start_frame"):
        replay(path, MemorySink(), start_frame=N)


def test_max_speed_is_paced_by_a_blocking_sink(recording):
    path, _ = recording
    sink = MemorySink(maxsize=1, timeout_s=0.01)
    got: list = []
    replayed = threading.Event()

    def consumer() -> None:  # takes a message only once the replay found the sink full and waits
        deadline = time.monotonic() + 60
        while not got or not isinstance(got[-1], EndMsg):
            while sink.refused <= len(got) and not replayed.is_set():
                assert time.monotonic() < deadline, "the replay stopped sending"
                time.sleep(0.002)
            msg = sink.get(timeout_s=30.0)
            if msg is None:
                return
            got.append(msg)

    worker = threading.Thread(target=consumer)
    worker.start()
    stats = replay(path, sink, speed="max")
    replayed.set()
    worker.join(timeout=30)
    assert not worker.is_alive()
    # every frame waited for the consumer to make room (a refused send is retried, not dropped) ...
    assert sink.refused >= N
    # ... and arrived, in order: as fast as the consumer, never faster
    assert [m.seq for m in got if isinstance(m, FrameMsg)] == list(range(N))
    assert isinstance(got[-1], EndMsg) and got[-1].reason == "complete"
    assert stats.n_frames == N and not stats.stopped


def test_stop_event_stops_a_replay(recording):
    path, _ = recording
    stop = threading.Event()
    sink = MemorySink()
    threading.Thread(target=lambda: sink.wait_for(3, timeout_s=5) and stop.set(), daemon=True).start()
    stats = replay(path, sink, speed=0.5, stop_event=stop)
    assert stats.stopped and stats.n_frames < N
    assert sink.ends[0].reason == "stopped" and sink.ends[0].n_frames == stats.n_frames


def test_replay_of_an_mrc_with_tilt_file(tmp_path, rng):
    from tiltstream.stream.mrc import write_mrc_series

    series = TiltSeries(frames=rng.random((4, 9, 11)).astype(np.float32), angles_deg=[-30.0, 0.0, 30.0, 60.0],
                        times_s=[0.0, 1.0, 2.0, 3.0])
    path = tmp_path / "s.mrc"
    write_mrc_series(path, series)
    sink = MemorySink()
    replay(path, sink, speed="max")
    np.testing.assert_array_equal(np.stack([f.data for f in sink.frames]), series.frames)
    np.testing.assert_array_equal([f.angle_deg for f in sink.frames], series.angles_deg)


def test_unreadable_file_fails_clearly(tmp_path):
    bad = tmp_path / "nothing.h5"
    bad.write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="nothing.h5"):
        replay(bad, MemorySink())
