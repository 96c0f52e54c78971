"""The service numbers each published type on its own, so a viewer's loss count means lost messages."""

import itertools
import threading
import time

import pytest

from tiltstream.recon.engine import EngineConfig
from tiltstream.recon.service import ReconService
from tiltstream.recon.streaming import StreamingParams
from tiltstream.sim import make_phantom, simulate_series
from tiltstream.stream.protocol import EndMsg, FrameMsg, SlicesMsg, StartMsg
from tiltstream.stream.transport import FrameSender, Publisher, Subscriber

# volumes only when forced (first update, end of series): far fewer volumes than slices and metrics
CFG = EngineConfig(streaming=StreamingParams(window_frames=16, subset_size=8), device="cpu",
                   volume_period_s=1e9, idle_refine_steps=3)
_names = itertools.count()


@pytest.fixture(scope="module")
def series():
    return simulate_series(make_phantom("nanorod", size=16, static=True), n_frames=24, blur=False)


def drain(sub: Subscriber, quiet_s: float = 0.3) -> None:
    """Read until nothing has arrived for ``quiet_s`` (every message goes through the intake)."""
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        if sub.recv_latest_by_type(timeout_ms=50):
            last = time.monotonic()


def wait_subscribed(pub: Publisher, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not pub.poll_subscriptions():
        assert time.monotonic() < deadline, "subscriber never connected"
        time.sleep(0.01)


def test_subscriber_of_a_whole_run_counts_no_loss_and_a_real_drop_once(series) -> None:
    n = next(_names)
    sid = "f" * 32
    published = []
    with FrameSender(f"inproc://seq-frames-{n}", sndhwm=1000) as tx:
        svc = ReconService(tx.endpoint, f"inproc://seq-pub-{n}", CFG)
        send = svc.publisher.send

        def record(msg):
            published.append(msg)
            return send(msg)

        svc.publisher.send = record
        try:
            with Subscriber(svc.pub_endpoint, rcvhwm=100_000) as viewer:  # inproc: nothing dropped
                wait_subscribed(svc.publisher)
                run = threading.Thread(target=svc.run, kwargs={"until_end": True, "idle_timeout_s": 20})
                run.start()
                assert tx.send(StartMsg(stream_id=sid, frame_shape=series.frames.shape[1:], dtype="float32",
                                        scheme="golden", pixel_nm=series.pixel_nm))
                for i in range(len(series)):
                    assert tx.send(FrameMsg(seq=i, stream_id=sid, angle_deg=float(series.angles_deg[i]),
                                            t_s=float(series.times_s[i]), exposure_s=0.1, data=series.frames[i]))
                    time.sleep(0.01)
                assert tx.send(EndMsg(stream_id=sid, n_frames=len(series), reason="complete"))
                run.join(30)
                assert not run.is_alive()
                drain(viewer)
                stats = viewer.stats()
        finally:
            svc.close()
    by_type: dict[str, list[int]] = {}
    for msg in published:
        assert msg.stream_id == sid
        by_type.setdefault(msg.NAME, []).append(msg.seq)
    assert set(by_type) == {"slices", "volume", "metrics"}
    assert 2 <= len(by_type["volume"]) < len(by_type["slices"])  # volumes are published less often
    assert all(seqs == list(range(len(seqs))) for seqs in by_type.values()), by_type
    assert stats.received == len(published) and stats.rejected == 0
    assert stats.missing == 0 and stats.gaps == 0

    # the same run with one slices message lost on the way: counted once, as one missing message
    lost = next(m for m in published if isinstance(m, SlicesMsg) and m.seq == len(by_type["slices"]) // 2)
    with Publisher(f"inproc://seq-replay-{n}", sndhwm=100_000) as pub, \
            Subscriber(pub.endpoint, rcvhwm=100_000) as viewer:
        wait_subscribed(pub)
        for msg in published:
            if msg is not lost:
                pub.send(msg)
        drain(viewer)
        stats = viewer.stats()
    assert stats.received == len(published) - 1 and stats.rejected == 0
    assert stats.missing == 1 and stats.gaps == 1
