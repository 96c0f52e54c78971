"""The live streaming SIRT on dask slab actors (2 worker processes, 1 thread each): the same volumes,
slices and metrics as one process frame by frame, a killed worker survived, ``recon --scheduler``
end to end."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from tiltstream.cli import main
from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.recon.streaming import FrameRejected, StreamingParams, StreamingSirt
from tiltstream.sim import make_phantom, simulate_series
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg
from tiltstream.stream.transport import FrameSender, Subscriber

distributed = pytest.importorskip("distributed", reason="live slab actors need the [distributed] extra")

from tiltstream.recon.live_slabs import SlabbedSirt  # noqa: E402 (after the skip: it needs distributed)

N, NY, NU, NZ = 48, 19, 23, 17  # odd, non-square: a transposed axis cannot pass
PARAMS = StreamingParams(window_frames=20, subset_size=6, steps_per_update=2, half_life_s=6.0)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c


@pytest.fixture(scope="module")
def series():
    s = simulate_series(make_phantom("nanorod", size=NU, static=True), n_frames=N, blur=False)
    rng = np.random.default_rng(14)
    frames = s.frames[:, :NY] + rng.normal(0, 0.02, (N, NY, NU)).astype(np.float32)  # noise: change_sigma is finite
    return np.ascontiguousarray(frames, dtype=np.float32), s.angles_deg, s.times_s


def _rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_two_slab_actors_equal_one_process_frame_by_frame(client, series):
    frames, angles, times = series
    one = StreamingSirt((NZ, NY, NU), PARAMS, axis_offset_px=0.6, device="cpu")
    two = SlabbedSirt(client, (NZ, NY, NU), PARAMS, axis_offset_px=0.6, device="cpu")
    assert len(two.slabs) == 2 and len({str(a._address) for a in two._actors}) == 2  # one slab per worker
    predicted = 0
    for i in range(N):
        for est in (one, two):
            est.add_frame(frames[i], angles[i], times[i], seq=100 + i)
            est.update(steps=1 + i % 3)
        assert _rel(two.volume(), one.volume()) <= 1e-5, f"frame {i}"
        assert two.last_residual == pytest.approx(one.last_residual, rel=1e-5)
        if one.last_prediction is None:
            assert two.last_prediction is None
        else:
            predicted += 1
            assert two.last_prediction.nrmse == pytest.approx(one.last_prediction.nrmse, rel=1e-5)
            assert two.last_prediction.change_sigma == pytest.approx(one.last_prediction.change_sigma, rel=1e-5)
        assert two.window_seqs == one.window_seqs and two.time_s == pytest.approx(one.time_s, rel=1e-12)
    assert predicted == N - PARAMS.subset_size and one.window_size == two.window_size == PARAMS.window_frames
    index = (NZ // 3, NY - 2, 5)  # the row of xz on the second slab
    for got, want in zip(two.slices(index), one.slices(index)):
        assert got.shape == want.shape and _rel(got, want) <= 1e-5
    assert _rel(two.project(33.0), one.project(33.0)) <= 1e-5
    with pytest.raises(FrameRejected):  # bad input is refused here, before any actor sees it
        two.add_frame(np.full((NY, NU), np.nan, dtype=np.float32), 0.0, 99.0)
    assert two.n_frames_seen == N and two.slab_rebuilds == 0
    two.reset()
    assert two.window_size == 0 and not two.volume().any()
    two.close()


def _engine_outputs(engine, frames, angles, times):
    engine.handle(StartMsg(stream_id="e" * 32, frame_shape=(NY, NU), dtype="float32", scheme="golden", pixel_nm=0.5))
    steps = []
    for i in range(N):
        engine.handle(FrameMsg(seq=i, stream_id="e" * 32, angle_deg=float(angles[i]), t_s=float(times[i]),
                               exposure_s=0.1, data=frames[i]), received_at=0.0)
        if i % 4 == 3 or i == N - 1:  # frames also arrive several per update
            steps.append(engine.step())
    return steps


def test_engine_on_slab_actors_publishes_what_one_process_publishes(client, series):
    cfg = EngineConfig(streaming=PARAMS, vol_z=NZ, device="cpu", update_budget_s=None, volume_period_s=0.0)
    one = ReconEngine(cfg, clock=lambda: 0.0)
    two = ReconEngine(dataclasses.replace(cfg, scheduler=client.scheduler.address), clock=lambda: 0.0)
    try:
        got, want = _engine_outputs(two, *series), _engine_outputs(one, *series)
        assert len(got) == len(want)
        compared = set()
        for g_step, w_step in zip(got, want):
            assert [type(m) for m in g_step] == [type(m) for m in w_step]
            for g, w in zip(g_step, w_step):
                if isinstance(g, SlicesMsg):
                    assert g.index == w.index and g.t_s == pytest.approx(w.t_s)
                    for name in ("xy", "xz", "yz"):
                        assert _rel(getattr(g, name), getattr(w, name)) <= 1e-5
                elif isinstance(g, VolumeMsg):
                    assert _rel(g.data, w.data) <= 1e-5
                elif isinstance(g, MetricsMsg):
                    assert g.values["slab_rebuilds"] == 0 and "slab_rebuilds" not in w.values
                    for name in ("sirt_residual", "sirt_predict_nrmse", "change_sigma", "frames_seen", "window_frames"):
                        if name in w.values:
                            compared.add(name)
                            assert g.values[name] == pytest.approx(w.values[name], rel=1e-5), name
        assert compared == {"sirt_residual", "sirt_predict_nrmse", "change_sigma", "frames_seen", "window_frames"}
        assert isinstance(two.estimator, SlabbedSirt) and isinstance(one.estimator, StreamingSirt)
    finally:
        two.close()


def test_a_killed_worker_is_reported_its_slab_rebuilt_and_the_series_goes_on(client, series, caplog):
    frames, angles, times = series
    one = StreamingSirt((NZ, NY, NU), PARAMS, device="cpu")
    two = SlabbedSirt(client, (NZ, NY, NU), PARAMS, device="cpu")
    victim = str(two._actors[1]._address)
    for i in range(N):
        if i == N - 5:  # the window still holds 15 frames only the coordinator can give back
            pid = client.run(os.getpid, workers=[victim])[victim]
            os.kill(pid, signal.SIGKILL)
        for est in (one, two):
            est.add_frame(frames[i], angles[i], times[i], seq=i)
            with caplog.at_level(logging.ERROR, logger="tiltstream.recon.live_slabs"):
                est.update(steps=2)
    assert two.slab_rebuilds == 1 and str(two._actors[1]._address) != victim
    lost = [r for r in caplog.records if "lost" in r.getMessage()]
    assert len(lost) == 1 and f"worker {victim} lost" in lost[0].getMessage()
    assert "\n" not in lost[0].getMessage()
    assert two.n_frames_seen == N and two.window_seqs == one.window_seqs
    # the rebuilt slab converges back to the one-process estimate as both refine (idle refinement)
    gaps, sweep = [], 4 * -(-PARAMS.window_frames // PARAMS.subset_size)
    for _ in range(4):
        a, b = two.volume(), one.volume()
        gaps.append(float(np.linalg.norm(a - b) / np.linalg.norm(b)))
        one.update(steps=sweep)
        two.update(steps=sweep)
    # (a slab rebuilt without the window's frames is still 0.14 away after 12 sweeps)
    assert gaps[3] < gaps[2] < gaps[1] < gaps[0] and gaps[3] < 0.1, gaps
    assert _rel(a[:, two.slabs[0].span], b[:, two.slabs[0].span]) <= 1e-5  # the surviving slab never changed
    two.close()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker


def test_recon_scheduler_local_end_to_end(series, capsys):
    frames, angles, times = series
    sid = "f" * 32
    with FrameSender("tcp://127.0.0.1:0", timeout_ms=60_000) as tx:
        result: dict[str, object] = {}
        argv = ["recon", "--connect", tx.endpoint, "--pub", "tcp://127.0.0.1:0", "--scheduler", "local:2",
                "--window", "16", "--subset", "4", "--device", "cpu", "--until-end", "--idle-timeout", "120"]
        thread = threading.Thread(target=lambda: result.setdefault("rc", main(argv)), daemon=True)
        thread.start()
        out, deadline = "", time.monotonic() + 120
        while (m := re.search(r"publishing on (tcp://\S+)", out)) is None and time.monotonic() < deadline:
            time.sleep(0.1)
            out += capsys.readouterr().out
        assert m is not None, out
        got = []
        with Subscriber(m.group(1), rcvhwm=10_000) as sub:
            time.sleep(0.5)  # the subscription reaches the service
            assert tx.send(StartMsg(stream_id=sid, frame_shape=(NY, NU), dtype="float32", scheme="golden"))
            for i in range(N):
                assert tx.send(FrameMsg(seq=i, stream_id=sid, angle_deg=float(angles[i]), t_s=float(times[i]),
                                        exposure_s=0.1, data=frames[i]))
            assert tx.send(EndMsg(stream_id=sid, n_frames=N, reason="complete"))
            thread.join(120)
            got += sub.recv_all(timeout_ms=500)
    assert not thread.is_alive() and result["rc"] == 0
    out += capsys.readouterr().out
    summary = json.loads(out.split("recon: ")[-1].strip().splitlines()[0])
    assert summary["frames_received"] == N and summary["frames_rejected"] == 0
    metrics = [m for m in got if isinstance(m, MetricsMsg) and m.stream_id == sid]
    assert metrics and metrics[-1].values["frames_seen"] == N and metrics[-1].values["slab_rebuilds"] == 0
    slices = [m for m in got if isinstance(m, SlicesMsg)]
    assert slices and slices[-1].xy.shape == (NY, NU) and slices[-1].yz.shape == (NU, NY)


@pytest.mark.parametrize("spec, expected", [
    ("local:0", "expected local:N with N ≥ 1 worker processes"),
    ("tcp://127.0.0.1:9", "dask scheduler tcp://127.0.0.1:9 unreachable"),
])
def test_recon_scheduler_errors_are_one_line(spec, expected, capsys):
    assert main(["recon", "--connect", "tcp://127.0.0.1:9", "--pub", "tcp://127.0.0.1:0", "--scheduler", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
