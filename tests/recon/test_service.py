"""The live reconstruction service over real sockets (tcp port 0 on 127.0.0.1)."""

import threading
import time

import numpy as np
import pytest

from tiltstream.recon.engine import EngineConfig
from tiltstream.recon.service import ReconService
from tiltstream.recon.streaming import StreamingParams
from tiltstream.sim import make_phantom, simulate_series
from tiltstream.stream.garbage import send_garbage
from tiltstream.stream.nxtomo import write_series
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg, pack
from tiltstream.stream.series import TiltSeries
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import FrameSender, Subscriber

CFG = EngineConfig(streaming=StreamingParams(window_frames=32, subset_size=8, steps_per_update=2), device="cpu",
                   volume_period_s=0.2)


@pytest.fixture(scope="module")
def series():
    return simulate_series(make_phantom("nanorod", size=20, static=True), n_frames=48, blur=False)


def start(sid, s):
    return StartMsg(stream_id=sid, frame_shape=s.frames.shape[1:], dtype="float32", scheme="golden",
                    pixel_nm=s.pixel_nm)


def frame(sid, s, i):
    return FrameMsg(seq=i, stream_id=sid, angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]),
                    exposure_s=0.1, data=s.frames[i])


class Running:
    """The service in a thread; joins it and surfaces its errors at exit."""

    def __init__(self, svc, **run_kw):
        self.svc, self.stop, self.error, self.result = svc, threading.Event(), None, None
        self.thread = threading.Thread(target=self._run, kwargs=run_kw, daemon=True)

    def _run(self, **kw):
        try:
            self.result = self.svc.run(self.stop, **kw)
        except BaseException as exc:  # noqa: BLE001
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)
        self.svc.close()
        if self.error is not None:
            raise self.error


def collect(sub, until, timeout_s=10.0):
    got, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline and not until(got):
        got.extend(sub.recv_all(timeout_ms=50))  # every message: a DIP metrics is not superseded by a SIRT one
    return got


def test_service_reconstructs_survives_garbage_and_serves_late_joiners(series, rng):
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), CFG)
        with Running(svc), Subscriber(svc.pub_endpoint, rcvhwm=1000) as sub:
            sid = "a" * 32
            assert tx.send(start(sid, series))
            for i in range(24):
                assert tx.send(frame(sid, series, i))
            assert send_garbage(tx, rng, 1000) == 1000
            for i in range(24, 48):
                assert tx.send(frame(sid, series, i))
            got = collect(sub, lambda g: any(isinstance(m, MetricsMsg) and m.values.get("frames_seen") == 48
                                             for m in g))
            assert any(isinstance(m, SlicesMsg) for m in got) and any(isinstance(m, VolumeMsg) for m in got)
            metrics = [m for m in got if isinstance(m, MetricsMsg)][-1]
            assert metrics.values["frames_seen"] == 48 and metrics.values["last_frame_seq"] == 47
            deadline = time.monotonic() + 20
            while svc.engine.refining and time.monotonic() < deadline:  # idle: it keeps refining
                time.sleep(0.05)
            # a monitor joining now gets the current volume without waiting for new frames
            with Subscriber(svc.pub_endpoint) as late:
                vols = collect(late, lambda g: any(isinstance(m, VolumeMsg) for m in g), timeout_s=5)
                assert any(isinstance(m, VolumeMsg) and m.stream_id == sid for m in vols)
    stats = svc.stats
    assert stats.frames_received == 48
    assert sum(stats.rejected_by_reason.values()) == 1000
    truth = series.truth(0.0)
    vol = svc.engine.estimator.volume()
    assert np.linalg.norm(vol - truth) / np.linalg.norm(truth) < 0.35


def test_publisher_restart_and_new_series(series):
    endpoint = tcp_endpoint(0)
    with FrameSender(endpoint) as tx:
        endpoint = tx.endpoint
        svc = ReconService(endpoint, None, CFG)
        with Running(svc):
            tx.send(start("b" * 32, series))
            for i in range(10):
                tx.send(frame("b" * 32, series, i))
            deadline = time.monotonic() + 10
            while svc.stats.frames_received < 10 and time.monotonic() < deadline:
                time.sleep(0.02)
            tx.close()
            with FrameSender(endpoint) as tx2:  # the microscope PC restarts its publisher: a new series
                tx2.send(start("c" * 32, series))
                for i in range(6):
                    tx2.send(frame("c" * 32, series, i))
                tx2.send(EndMsg(stream_id="c" * 32, n_frames=6, reason="complete"))
                deadline = time.monotonic() + 10
                while svc.stats.frames_received < 16 and time.monotonic() < deadline:
                    time.sleep(0.02)
                time.sleep(0.3)
    assert svc.stats.frames_received == 16 and svc.stats.series == 2
    assert svc.engine.stream_id == "c" * 32 and svc.engine.estimator.n_frames_seen == 6


def test_resume_from_recording(series, tmp_path):
    path = tmp_path / "rec.h5"
    write_series(path, TiltSeries(frames=series.frames, angles_deg=series.angles_deg, times_s=series.times_s,
                                  pixel_nm=series.pixel_nm, metadata={"stream_id": "d" * 32}))
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, None, CFG, resume_from=path)
        est = svc.engine.estimator
        assert svc.engine.stream_id == "d" * 32 and est.window_size == 32
        truth = series.truth(0.0)
        assert np.linalg.norm(est.volume() - truth) / np.linalg.norm(truth) < 0.6
        with Running(svc):
            tx.send(frame("d" * 32, series, 47))  # the live series goes on: no reset
            deadline = time.monotonic() + 10
            while svc.stats.frames_received < 1 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
    assert svc.engine.stream_id == "d" * 32 and svc.engine.estimator.n_frames_seen == 33


def test_resume_gives_the_online_dip_every_recorded_frame(series, tmp_path):
    """The streaming SIRT takes the last window; the DIP, a model of the whole series, takes all frames."""
    from tiltstream.recon.dip.online import OnlineDipConfig

    path = tmp_path / "rec.h5"
    write_series(path, TiltSeries(frames=series.frames, angles_deg=series.angles_deg, times_s=series.times_s,
                                  pixel_nm=series.pixel_nm, metadata={"stream_id": "e" * 32}))
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, None, CFG, resume_from=path, dip=OnlineDipConfig(device="cpu"))
        svc.close()
    assert svc.engine.estimator.window_size == 32
    online = svc.dip.dip
    assert online.stream_id == "e" * 32
    online.work(steps=1)  # takes the queued frames in
    assert online.n_frames == 48


def test_ten_thousand_frames_into_recorder_and_recon_lose_none(tmp_path):
    import subprocess
    import sys

    from tiltstream.stream.readers import read_series
    from tiltstream.stream.transport import FanOutSender

    n, shape = 10_000, (8, 9)
    rng = np.random.default_rng(5)
    angles = rng.uniform(-70, 70, n)
    path = tmp_path / "fast.h5"
    with FanOutSender({"record": tcp_endpoint(0), "recon": tcp_endpoint(0)}, timeout_ms=30_000) as fan:
        recorder = subprocess.Popen([sys.executable, "-m", "tiltstream", "record", "--connect", fan.endpoints["record"],
                                     "--out", str(path), "--until-end", "--idle-timeout", "60"],
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        svc = ReconService(fan.endpoints["recon"], None, EngineConfig(device="cpu", idle_refine_steps=0))
        try:
            with Running(svc, until_end=True, idle_timeout_s=60) as running:
                sid = "f" * 32
                assert fan.send(StartMsg(stream_id=sid, frame_shape=shape, dtype="float32", scheme="golden"))
                for i in range(n):  # as fast as the slower consumer takes them
                    assert fan.send(FrameMsg(seq=i, stream_id=sid, angle_deg=float(angles[i]), t_s=0.01 * i,
                                             exposure_s=0.01, data=np.full(shape, i, np.float32)))
                assert fan.send(EndMsg(stream_id=sid, n_frames=n, reason="complete"))
                out, _ = recorder.communicate(timeout=120)
                running.thread.join(120)
        finally:
            if recorder.poll() is None:
                recorder.kill()
    assert recorder.returncode == 0, out
    assert svc.stats.frames_received == n and svc.engine.estimator.n_frames_seen == n
    assert sum(svc.stats.rejected_by_reason.values()) == 0
    series = read_series(path)
    assert series.n_frames == n
    np.testing.assert_array_equal(series.angles_deg, angles)
    np.testing.assert_array_equal(series.frames[:, 0, 0], np.arange(n, dtype=np.float32))


def test_online_dip_publishes_estimates_beside_the_streaming_sirt(series):
    from tiltstream.recon.dip import DipParams
    from tiltstream.recon.dip.online import OnlineDipConfig

    dip = OnlineDipConfig(params=DipParams(mlp_width=32, mlp_depth=2, decoder_width=16, batch_frames=4,
                                           heldout_fraction=0.0, device="cpu"),
                          min_frames=8, publish_period_s=0.3, n_times=3, device="cpu", nice=0)
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), CFG, dip=dip)
        with Running(svc, until_end=True) as run, Subscriber(svc.pub_endpoint, rcvhwm=1000) as sub:
            sid = "d" * 32
            assert tx.send(start(sid, series))
            got = []
            for i in range(48):
                assert tx.send(frame(sid, series, i))
                time.sleep(0.02)
                got.extend(sub.recv_all(timeout_ms=0))
            # an estimate while the series is open (the first DIP steps of a process are slow), then
            # the end/1, which brings the last one
            got.extend(collect(sub, lambda g: any(isinstance(m, VolumeMsg) and m.source == "dip" for m in got + g),
                               timeout_s=20.0))
            assert tx.send(EndMsg(stream_id=sid, n_frames=48, reason="done"))
            run.thread.join(30)
            assert not run.thread.is_alive()
            got.extend(collect(sub, lambda g: False, timeout_s=0.5))
    assert run.error is None
    dip_vols = [m for m in got if isinstance(m, VolumeMsg) and m.source == "dip"]
    dip_metrics = [m.values for m in got if isinstance(m, MetricsMsg) and "dip_steps" in m.values]
    assert dip_vols and dip_metrics
    assert all(m.stream_id == sid and m.data.shape == (20, 20, 20) and np.isfinite(m.data).all() for m in dip_vols)
    assert dip_metrics[-1]["dip_frames"] == 48  # the last estimate, at the end/1, has every frame
    assert "dip_heldout_nrmse" in dip_metrics[-1]
    # the streaming SIRT went on as usual beside it: every frame folded in, a volume per update
    assert svc.stats.frames_received == 48 and svc.stats.updates >= 10 and svc.stats.dip_estimates >= 2
    assert any(isinstance(m, VolumeMsg) and m.source == "sirt" for m in got)


def test_with_the_online_dip_each_monitor_has_room_for_a_whole_estimate():
    import zmq

    from tiltstream.recon.dip.online import OnlineDipConfig

    dip = OnlineDipConfig(n_times=6, device="cpu")
    with FrameSender(tcp_endpoint(0)) as tx:
        plain = ReconService(tx.endpoint, tcp_endpoint(0), CFG)
        with_dip = ReconService(tx.endpoint, tcp_endpoint(0), CFG, dip=dip)
        try:
            # an estimate is 6 volumes + its metrics, back to back: a queue of 2 dropped its tail
            # (measured: 5 of 35 messages lost for 128³ volumes to an idle subscriber)
            assert with_dip.publisher.socket.getsockopt(zmq.SNDHWM) >= dip.n_times + 1
            assert plain.publisher.socket.getsockopt(zmq.SNDHWM) == 2  # viewers otherwise want the latest
        finally:
            plain.close()
            with_dip.close()


def test_huge_start_is_refused_within_budget_and_the_series_goes_on(series):
    """One valid 80-byte start/1 of 8192 x 8192 frames must not kill the service (issue 12, finding 2)."""
    sid = "f" * 32
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), CFG)
        with Running(svc), Subscriber(svc.pub_endpoint) as sub:
            tx.send(start(sid, series))
            for i in range(10):
                tx.send(frame(sid, series, i))
            huge = StartMsg(stream_id="h" * 32, frame_shape=(8192, 8192), dtype="uint16", scheme="golden")
            assert len(b"".join(bytes(p) for p in pack(huge))) < 200
            tx.send(huge)
            # a foreign sender's frames of yet another series, without start/1: no series either
            with FrameSender(svc.frames_endpoint, bind=False) as other:
                other.send(frame("x" * 32, series, 0))
            for i in range(10, 20):
                tx.send(frame(sid, series, i))
            metrics = collect(sub, lambda got: any(isinstance(m, MetricsMsg) and m.values.get("frames_seen", 0) >= 10
                                                   and "rejected.over_budget" in m.values for m in got))
    last = [m for m in metrics if isinstance(m, MetricsMsg) and "rejected.over_budget" in m.values][-1]
    assert last.values["rejected.over_budget"] >= 1 and last.values["rejected_total"] >= 1
    assert svc.engine.stream_id == sid  # the series that fits goes on
    assert svc.engine.estimator.vol_shape[1:] == series.frames.shape[1:]


def test_budget_admission_is_computed_from_the_announced_size():
    from tiltstream.recon.engine import ReconEngine

    engine = ReconEngine(EngineConfig(device="cpu", memory_budget_bytes=64 * 2**20))
    fits, need, budget = engine.admits((64, 64))
    assert fits and need < budget
    fits, need, _ = engine.admits((8192, 8192))
    assert not fits and need > 2**40  # terabytes: an 8192^3 float32 estimate alone is 2 TiB
    engine.handle(StartMsg(stream_id="h" * 32, frame_shape=(1024, 1024), dtype="uint16", scheme="golden"))
    assert engine.estimator is None and engine.rejected == {"over_budget": 1}
    engine.handle(FrameMsg(seq=0, stream_id="h" * 32, angle_deg=0.0, t_s=0.0, exposure_s=0.1,
                           data=np.zeros((1024, 1024), np.uint16)))
    assert engine.rejected == {"over_budget": 2} and engine.estimator is None


@pytest.mark.parametrize("error", [RuntimeError("slab worker lost and no worker left"),
                                   OverflowError("(34, 'Numerical result out of range')")])
def test_a_failing_update_or_an_output_that_fails_the_rules_is_counted_and_the_service_goes_on(series, error):
    """Neither an error of the estimate (slab workers lost beyond repair, an overflow) nor a message
    of its own that fails the protocol's rules (a voxel size beyond its range) may stop the service:
    counted, logged, not published."""
    sid = "f" * 32
    bad = VolumeMsg(stream_id=sid, seq=0, t_s=0.0, data=np.zeros((2, 2, 2), np.float32), source="sirt",
                    n_frames_used=1, voxel_nm=1e30)
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), EngineConfig(device="cpu", idle_refine_steps=0))
        real_step, calls = svc.engine.step, []

        def flaky(**kw):
            calls.append(kw)
            if len(calls) == 3:
                raise error
            return ([bad] if len(calls) == 5 else []) + real_step(**kw)

        svc.engine.step = flaky
        with Running(svc):
            assert tx.send(start(sid, series))
            for i in range(12):
                assert tx.send(frame(sid, series, i))
                time.sleep(0.02)
            deadline = time.monotonic() + 20
            while svc.stats.frames_received < 12 and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.3)
    assert svc.engine.rejected["engine_error"] == 1 and svc.engine.rejected["publish_error"] == 1
    assert svc.stats.frames_received == 12 and svc.engine.estimator.n_frames_seen >= 10  # it went on
    assert svc.stats.published > 12


def test_a_sender_faster_than_the_reconstruction_meets_backpressure_and_loses_nothing(series):
    """While the reconstruction is stuck, the service takes at most a window of frames off the
    socket (not everything the sender can push, without bound): the sender's sends wait and time
    out. Once it goes on, every frame the sender got through is reconstructed."""
    n, sid, release = 200, "b" * 32, threading.Event()

    def nth(i):
        k = i % len(series)
        return FrameMsg(seq=i, stream_id=sid, angle_deg=float(series.angles_deg[k]), t_s=0.1 * i, exposure_s=0.1,
                        data=series.frames[k])

    with FrameSender(f"inproc://backpressure-{time.monotonic_ns()}", sndhwm=4, timeout_ms=100) as tx:
        params = StreamingParams(window_frames=8, subset_size=4)
        svc = ReconService(tx.endpoint, None, EngineConfig(streaming=params, device="cpu", idle_refine_steps=0))
        real_handle = svc.engine.handle

        def stuck(msg, received_at=None):
            if isinstance(msg, FrameMsg):
                release.wait(30)
            return real_handle(msg, received_at)

        svc.engine.handle = stuck
        with Running(svc):
            assert tx.send(start(sid, series))
            sent = 0
            while sent < n and tx.send(nth(sent)):
                sent += 1
            assert sent < n  # the sender felt the stuck reconstruction
            time.sleep(0.3)
            assert svc.stats.frames_received <= 8 + 1  # a window in the inbox, one being handled
            release.set()
            deadline = time.monotonic() + 30
            while sent < n and time.monotonic() < deadline:
                sent += tx.send(nth(sent))
            while svc.stats.frames_received < n and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.2)
    assert sent == n and svc.stats.frames_received == n
    assert svc.engine.estimator.n_frames_seen == n and svc.engine.rejected == {}


def test_a_failing_last_update_at_the_end_is_counted_and_the_run_returns(series):
    """run(until_end=True) ends with a forced whole-volume update: its error is counted like any other."""
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, None, EngineConfig(device="cpu", idle_refine_steps=0))
        real_step = svc.engine.step

        def failing_at_end(**kw):
            if kw.get("force_volume"):
                raise RuntimeError("slab worker lost and no worker left")
            return real_step(**kw)

        svc.engine.step = failing_at_end
        sid = "e" * 32
        with Running(svc, until_end=True, idle_timeout_s=60) as running:
            assert tx.send(start(sid, series))
            for i in range(6):
                assert tx.send(frame(sid, series, i))
            assert tx.send(EndMsg(stream_id=sid, n_frames=6, reason="complete"))
            running.thread.join(30)
            assert not running.thread.is_alive()
    assert running.error is None and running.result is not None
    assert svc.engine.rejected["engine_error"] == 1 and svc.stats.frames_received == 6
