"""Sockets: lossless PUSH/PULL with fan-out, PUB/SUB for viewers, hostile input, CURVE."""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
from typing import Any

import numpy as np
import pytest
import zmq

from tiltstream.stream.garbage import GARBAGE_KINDS, garbage_messages, send_garbage
from tiltstream.stream.protocol import (
    EndMsg,
    FrameMsg,
    MetricsMsg,
    ProtocolError,
    SlicesMsg,
    StartMsg,
    VolumeMsg,
    pack,
    unpack,
)
from tiltstream.stream.sockets import CurveClientConfig, CurveConfig, check_endpoint, tcp_endpoint
from tiltstream.stream.transport import FanOutSender, FrameReceiver, FrameSender, Publisher, Subscriber

Y, U = 37, 31
_names = itertools.count()


@pytest.fixture(params=["tcp", "inproc"])
def endpoint(request: pytest.FixtureRequest) -> str:
    return tcp_endpoint(0) if request.param == "tcp" else f"inproc://test-transport-{next(_names)}"


def frame(i: int, stream_id: str = "s1", shape: tuple[int, int] = (Y, U), **extra: Any) -> FrameMsg:
    data = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) + 1000 * i
    return FrameMsg(seq=i, stream_id=stream_id, angle_deg=(0.5 * i) % 140 - 70, t_s=0.1 * i, exposure_s=0.05,
                    data=data, **extra)


def start(stream_id: str = "s1", shape: tuple[int, int] = (Y, U)) -> StartMsg:
    return StartMsg(stream_id=stream_id, frame_shape=shape, dtype="float32", scheme="golden_ratio",
                    pixel_nm=0.25, tilt_range_deg=(-70.0, 70.0),
                    experiment={"sample": "Au rod", "T": [20, 400]})


def every_message(rng: np.random.Generator) -> list[Any]:
    """One message of each type, in an order every sequence check accepts."""
    f32 = np.float32
    return [
        start(),
        frame(0, dose_e_per_A2=1.5, temperature_C=350.0, pixel_nm=0.25, tilt_range_deg=(-70, 70),
              stage_xyz=(1.0, -2.0, 3.5), focus_index=2),
        FrameMsg(seq=1, stream_id="s1", angle_deg=3.0, t_s=0.2, exposure_s=0.05,
                 data=rng.integers(0, 65535, (Y, U), dtype=np.uint16)),
        VolumeMsg(stream_id="s1", seq=0, t_s=0.2, data=rng.random((5, Y, U), dtype=f32), source="sirt",
                  n_frames_used=2, voxel_nm=0.5),
        SlicesMsg(stream_id="s1", seq=0, t_s=0.2, xy=rng.random((Y, U), dtype=f32),
                  xz=rng.random((5, U), dtype=f32), yz=rng.random((5, Y), dtype=f32), index=(2, 6, 9),
                  source="dip"),
        MetricsMsg(stream_id="s1", seq=0, t_s=0.2, values={"loss": 0.125, "fps": 30.0}),
        EndMsg(stream_id="s1", n_frames=2, reason="complete"),
    ]


def recv_all(rx: FrameReceiver, n: int, timeout_s: float = 5.0) -> list[Any]:
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        msg = rx.recv(timeout_ms=100)
        if msg is not None:
            out.append(msg)
    return out


def wait_subscribed(pub: Publisher, sub: Subscriber, timeout_s: float = 5.0) -> None:
    """Publish probes until the subscriber sees one (PUB/SUB drops what is sent before that)."""
    deadline = time.monotonic() + timeout_s
    for i in itertools.count():
        assert time.monotonic() < deadline, "subscriber never connected"
        pub.send(MetricsMsg(stream_id="probe", seq=i, t_s=0.0, values={}))
        if sub.recv_latest(timeout_ms=20) is not None:
            return


# ------------------------------------------------------------------------------------------------
# Endpoints and timeouts.


def test_endpoints_port_zero_and_validation() -> None:
    with FrameSender(tcp_endpoint(0)) as tx:
        host, port = tx.endpoint.removeprefix("tcp://").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
    for bad in ("127.0.0.1:5555", "http://x:1", "tcp://127.0.0.1", "tcp://:5", "inproc://"):
        with pytest.raises(ValueError, match="endpoint: expected"):
            check_endpoint(bad)
    assert tx.closed


def test_bind_outside_loopback_without_curve_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="tiltstream.stream.sockets")
    with FrameReceiver("tcp://127.0.0.1:0", bind=True):
        pass
    assert not caplog.records
    with FrameReceiver("tcp://*:0", bind=True):
        pass
    assert any("without CURVE" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)  # the guard against hanging: these waits are 50 ms
def test_waits_return_none_or_false_instead_of_hanging(endpoint: str) -> None:
    with FrameSender(endpoint, timeout_ms=50) as tx:  # bound, nobody connected: nowhere to go
        t = time.monotonic()
        assert tx.send(frame(0)) is False
        assert time.monotonic() - t >= 0.04  # it waited its timeout first
        assert tx.timeouts == 1 and tx.sent == 0
        with FrameReceiver(tx.endpoint) as rx:
            t = time.monotonic()
            assert rx.recv(timeout_ms=50) is None
            assert time.monotonic() - t >= 0.04
    with Publisher(tcp_endpoint(0)) as pub, Subscriber(pub.endpoint) as sub:
        assert sub.recv_latest(timeout_ms=30) is None
        assert sub.recv_latest_by_type(timeout_ms=0) == {}


# ------------------------------------------------------------------------------------------------
# Round trips over real sockets.


def test_round_trip_every_type_lossless(endpoint: str, rng: np.random.Generator) -> None:
    sent = every_message(rng)
    with FrameSender(endpoint, sndhwm=len(sent)) as tx, FrameReceiver(tx.endpoint) as rx:
        for msg in sent:
            assert tx.send(msg, timeout_ms=2000)
        got = recv_all(rx, len(sent))
        assert rx.recv(timeout_ms=20) is None
        stats = rx.stats()
    assert [type(m) for m in got] == [type(m) for m in sent]
    for a, b in zip(got, sent, strict=True):
        assert a == b, f"{a!r} != {b!r}"
    assert stats.received == len(sent) and stats.rejected == 0 and stats.missing == 0
    assert stats.series == 4  # the frame series and the volume, slices, metrics sequences


def test_round_trip_every_type_zero_copy(rng: np.random.Generator) -> None:
    big = FrameMsg(seq=0, stream_id="z", angle_deg=1.0, t_s=0.0, exposure_s=0.1,
                   data=rng.random((256, 129), dtype=np.float32))  # 129 KiB: sent without a copy
    with FrameSender(tcp_endpoint(0), zero_copy=True) as tx, FrameReceiver(tx.endpoint) as rx:
        assert tx.send(big)
        assert rx.recv(timeout_ms=5000) == big


def test_round_trip_every_type_pub_sub(endpoint: str, rng: np.random.Generator) -> None:
    sent = every_message(rng)
    with Publisher(endpoint, sndhwm=16) as pub, Subscriber(pub.endpoint, rcvhwm=16) as sub:
        wait_subscribed(pub, sub)
        for msg in sent:
            assert pub.send(msg)
            assert sub.recv_latest(timeout_ms=2000) == msg


# ------------------------------------------------------------------------------------------------
# Hostile input.


def expected_reasons(seed: int, n: int) -> collections.Counter[str]:
    """What unpack says about each garbage message (also proves each is rejected)."""
    reasons: collections.Counter[str] = collections.Counter()
    for parts in garbage_messages(np.random.default_rng(seed), n):
        with pytest.raises(ProtocolError) as info:
            unpack(parts)
        reasons[info.value.reason] += 1
    return reasons


def test_receiver_rejects_hostile_messages_and_keeps_running(endpoint: str) -> None:
    n_garbage = 1200
    reasons = expected_reasons(7, n_garbage)
    assert len(reasons) >= 10  # many different faults, not one repeated
    with FrameSender(endpoint, sndhwm=4 * n_garbage, timeout_ms=2000) as tx, FrameReceiver(tx.endpoint) as rx:
        assert tx.send(start()) and tx.send(frame(0))
        assert send_garbage(tx, np.random.default_rng(7), n_garbage // 2) == n_garbage // 2
        assert [m.seq for m in recv_all(rx, 2)[1:]] == [0]
        for msg in (frame(0), frame(0), start()):  # decodable, but out of sequence
            assert tx.send(msg)
        garbage = garbage_messages(np.random.default_rng(7), n_garbage)
        for parts in itertools.islice(garbage, n_garbage // 2):  # same messages as sent above
            pass
        for i, parts in enumerate(garbage):  # the second half, interleaved with good frames
            assert tx.send_raw(parts)
            if i % 100 == 99:
                assert tx.send(frame(1 + i // 100))
        got = recv_all(rx, 6)
        assert rx.recv(timeout_ms=50) is None
        stats = rx.stats()
    assert [m.seq for m in got] == [1, 2, 3, 4, 5, 6]
    reasons.update(duplicate=3)
    assert stats.rejects_by_reason == dict(reasons)
    assert stats.rejected == n_garbage + 3 and stats.received == 8 and stats.missing == 0


def test_garbage_covers_every_kind(rng: np.random.Generator) -> None:
    kinds = list(GARBAGE_KINDS)
    for i, parts in enumerate(garbage_messages(rng, 3 * len(kinds))):
        with pytest.raises(ProtocolError):
            unpack(parts)
        assert isinstance(parts, list) and all(isinstance(p, bytes) for p in parts), kinds[i % len(kinds)]


def test_gaps_and_new_series_are_counted(endpoint: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tiltstream.stream")
    with FrameSender(endpoint, sndhwm=64) as tx, FrameReceiver(tx.endpoint) as rx:
        for msg in [start("a"), frame(0, "a"), frame(1, "a"), frame(5, "a"), frame(2, "a"),
                    start("b"), frame(0, "b"), frame(9, "a"), frame(3, "c")]:
            assert tx.send(msg)
        got = recv_all(rx, 7)
        assert rx.recv(timeout_ms=50) is None
        stats = rx.stats()
    assert [(m.stream_id, getattr(m, "seq", None)) for m in got] == [
        ("a", None), ("a", 0), ("a", 1), ("a", 5), ("b", None), ("b", 0), ("c", 3)]
    assert stats.rejects_by_reason == {"out_of_order": 1, "stale": 1}
    assert stats.gaps == 2 and stats.missing == 3 + 3 and stats.series == 3
    assert any("missing seq" in r.getMessage() for r in caplog.records)
    assert any("new series 'c'" in r.getMessage() for r in caplog.records)


def test_an_end_after_many_lost_frames_ends_the_series_at_once(endpoint: str) -> None:
    """end/1 announcing 200 frames after frame 4: more than a plausible jump, but nothing follows an
    end to confirm it, so it is not held back (a recorder waiting --until-end would never stop)."""
    with FrameSender(endpoint, sndhwm=64) as tx, FrameReceiver(tx.endpoint) as rx:
        for msg in [start("a"), *(frame(i, "a") for i in range(5)), EndMsg(stream_id="a", n_frames=200, reason="x")]:
            assert tx.send(msg)
        got = recv_all(rx, 7)
        stats = rx.stats()
    assert isinstance(got[-1], EndMsg) and got[-1].n_frames == 200
    assert stats.missing == 195 and stats.rejected == 0


def test_a_message_of_many_tiny_parts_is_dropped_part_by_part_and_named() -> None:
    """The size limit is per part: a message of 100 000 one-byte parts passes it. The receiver keeps
    at most one part more than any message has, rejects it as extra_parts, and goes on."""
    from tiltstream.stream.intake import MAX_PARTS, recv_parts

    with FrameReceiver(tcp_endpoint(0), bind=True) as rx:
        raw = zmq.Context.instance().socket(zmq.PUSH)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(rx.endpoint)
        try:
            header = pack(start("a"))[0]
            raw.send_multipart([header] + [b"x"] * 100_000)
            raw.send_multipart(pack(start("a")))
            assert rx.recv(timeout_ms=5000).type_string == "start/1"
            assert rx.stats().rejects_by_reason == {"extra_parts": 1}
            for n in (1, MAX_PARTS, MAX_PARTS + 1, 50):
                raw.send_multipart([b"p"] * n)
                assert rx.socket.poll(5000)
                assert len(recv_parts(rx.socket)) == min(n, MAX_PARTS + 1)
        finally:
            raw.close(0)


def test_each_published_type_is_its_own_sequence(endpoint: str, rng: np.random.Generator) -> None:
    f32 = np.float32

    def volume(seq: int) -> VolumeMsg:
        return VolumeMsg(stream_id="s1", seq=seq, t_s=0.1 * seq, data=rng.random((3, 4, 5), dtype=f32),
                         source="sirt", n_frames_used=1)

    def slices(seq: int) -> SlicesMsg:
        return SlicesMsg(stream_id="s1", seq=seq, t_s=0.1 * seq, xy=rng.random((4, 5), dtype=f32),
                         xz=rng.random((3, 5), dtype=f32), yz=rng.random((3, 4), dtype=f32), index=(1, 2, 3),
                         source="sirt")

    def metrics(seq: int) -> MetricsMsg:
        return MetricsMsg(stream_id="s1", seq=seq, t_s=0.1 * seq, values={"loss": 1.0 / (seq + 1)})

    # slices and metrics after every update, a volume after every third: no gap in any sequence
    sent = [m for k in range(9) for m in (slices(k), metrics(k), *([volume(k // 3)] if k % 3 == 0 else []))]
    sent += [volume(4), slices(10), metrics(9)]  # then one volume, one slices message lost
    with FrameSender(endpoint, sndhwm=len(sent)) as tx, FrameReceiver(tx.endpoint) as rx:
        for msg in sent:
            assert tx.send(msg)
        got = recv_all(rx, len(sent))
        stats = rx.stats()
    assert got == sent
    assert stats.rejected == 0 and stats.missing == 2 and stats.gaps == 2


def test_gaps_log_warnings_on_the_lossless_path_and_info_on_the_viewer_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tiltstream.stream.tracking")
    with FrameSender(f"inproc://gap-log-{next(_names)}") as tx, FrameReceiver(tx.endpoint) as rx:
        for i in (0, 3):
            assert tx.send(frame(i))
        assert len(recv_all(rx, 2)) == 2
    lossless = [r for r in caplog.records if "series s1: 2 missing seq" in r.getMessage()]
    assert [r.levelno for r in lossless] == [logging.WARNING] and rx.stats().missing == 2
    caplog.clear()
    with Publisher(f"inproc://gap-log-{next(_names)}", sndhwm=100) as pub, \
            Subscriber(pub.endpoint, rcvhwm=100) as sub:
        wait_subscribed(pub, sub)
        for i in (0, 3):
            assert pub.send(frame(i))
        while sub.stats().received < 3:
            sub.recv_latest(timeout_ms=100)
    viewer = [r for r in caplog.records if "series s1: 2 missing seq" in r.getMessage()]
    assert [r.levelno for r in viewer] == [logging.INFO]


def test_gap_lines_are_rate_limited_only_where_asked() -> None:
    from tiltstream.stream.tracking import SeqTracker

    now = [0.0]
    seen: list[str] = []

    class Catch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler, logger = Catch(), logging.getLogger("tiltstream.stream.tracking")
    logger.addHandler(handler)
    try:
        for period, expected in [(0.0, 4), (30.0, 2)]:
            seen.clear()
            tracker = SeqTracker(gap_log_period_s=period, clock=lambda: now[0])
            tracker.begin("s")
            for seq, t in [(0, 0.0), (2, 1.0), (4, 2.0), (6, 31.0), (8, 32.0)]:  # a gap at each but the first
                now[0] = t
                assert tracker.check("s", seq).accepted
            assert tracker.n_missing == 4 and len(seen) == expected
        assert seen == ["series s: 1 missing seq in [1, 2)",
                        "series s: 1 missing seq in [5, 6) (and 1 more gaps in the last 30 s)"]
    finally:
        logger.removeHandler(handler)


@pytest.mark.timeout(60)  # far longer than the test, far shorter than the 10-minute waits it allows
def test_receive_and_send_timeouts_follow_each_call(endpoint: str) -> None:
    with FrameSender(endpoint, sndhwm=1, timeout_ms=2000) as tx, FrameReceiver(tx.endpoint, rcvhwm=1) as rx:
        assert tx.send(frame(0))
        assert rx.recv(timeout_ms=600_000) is not None  # a long wait, ended by the message
        assert rx.recv(timeout_ms=0) is None  # nothing queued: returns at once, not in 10 minutes
        t = time.monotonic()
        assert rx.recv(timeout_ms=150) is None  # the next call waits its own time
        assert time.monotonic() - t >= 0.14
        assert tx.send(frame(1), timeout_ms=600_000)  # room: queued without waiting
        sent = 2
        while tx.send(frame(sent), timeout_ms=0):  # until both queues are full: then it gives up at once
            sent += 1
            assert sent < 1000
        assert tx.timeouts == 1
        assert [m.seq for m in recv_all(rx, sent - 1)] == list(range(1, sent))
        assert tx.send(frame(sent))  # default timeout again: room now


# ------------------------------------------------------------------------------------------------
# Fan-out and backpressure.


def test_fan_out_gives_every_consumer_every_message() -> None:
    roles = {"record": tcp_endpoint(0), "recon": tcp_endpoint(0), "extra": f"inproc://fan-{next(_names)}"}
    n = 500
    with FanOutSender(roles, sndhwm=8, timeout_ms=5000) as fan:
        assert set(fan.endpoints) == set(roles) and all(":0" not in ep for ep in fan.endpoints.values())
        received: dict[str, list[int]] = {}

        def consume(role: str) -> None:
            with FrameReceiver(fan.endpoints[role], rcvhwm=8) as rx:
                received[role] = [m.seq for m in recv_all(rx, n, timeout_s=20)]

        threads = [threading.Thread(target=consume, args=(r,)) for r in roles]
        for t in threads:
            t.start()
        for i in range(n):
            assert fan.send(frame(i, shape=(4, 3)))
        for t in threads:
            t.join(30)
    assert received == {role: list(range(n)) for role in roles}


def test_backpressure_times_out_visibly_and_retry_completes(caplog: pytest.LogCaptureFixture) -> None:
    roles = {"fast": f"inproc://fast-{next(_names)}", "slow": f"inproc://slow-{next(_names)}"}
    with FanOutSender(roles, sndhwm=1, timeout_ms=100) as fan:
        fast = FrameReceiver(fan.endpoints["fast"], rcvhwm=1000)
        slow = FrameReceiver(fan.endpoints["slow"], rcvhwm=1)
        with fast, slow:
            sent = 0
            while True:  # "slow" never reads: its queue fills and sends start to time out
                msg = frame(sent, shape=(4, 3))
                if not fan.send(msg):
                    break
                sent += 1
                assert sent < 1000
            assert sent == 2  # inproc: one message queued at each end of the pipe
            assert fan.senders["slow"].timeouts == 1 and fan.senders["fast"].timeouts == 0
            assert any("send timed out" in r.getMessage() for r in caplog.records)
            assert [m.seq for m in recv_all(fast, sent + 1)] == list(range(sent + 1))
            assert [m.seq for m in recv_all(slow, sent)] == list(range(sent))  # drains the queue
            assert fan.send(msg, timeout_ms=2000)  # retry: only "slow" still needs it
            assert fan.send(frame(sent + 1, shape=(4, 3)), timeout_ms=2000)
            assert [m.seq for m in recv_all(slow, 2)] == [sent, sent + 1]
            assert [m.seq for m in recv_all(fast, 1)] == [sent + 1]
            assert fast.stats().rejected == 0 and slow.stats().rejected == 0
    assert fan.abandoned == {"fast": 0, "slow": 0}


# ------------------------------------------------------------------------------------------------
# Viewer path.


def publish(pub: Publisher, n: int, shape: tuple[int, int]) -> None:
    data = np.ones(shape, dtype=np.float32)
    for i in range(n):
        pub.send(FrameMsg(seq=i, stream_id="v", angle_deg=(0.1 * i) % 140 - 70, t_s=0.01 * i, exposure_s=0.01, data=data))


@pytest.mark.timeout(90)  # a publisher that waited for the stalled viewer would never finish its burst
def test_stalled_viewer_does_not_slow_the_publisher() -> None:
    n, shape = 3000, (64, 64)  # 16 KiB frames, 48 MiB in all: far more than the OS buffers
    with Publisher(tcp_endpoint(0)) as pub, Subscriber(pub.endpoint) as viewer, \
            Subscriber(pub.endpoint, rcvhwm=n + 10) as healthy:
        deadline = time.monotonic() + 5
        while pub.poll_subscriptions() >= 0 and pub.new_subscribers < 2:
            assert time.monotonic() < deadline, "subscriptions did not arrive"
            time.sleep(0.01)
        got_healthy: list[int] = []
        publish(pub, n, shape)  # the viewer reads nothing meanwhile
        deadline = time.monotonic() + 10  # generous: on a loaded machine delivery pauses now and then
        while (not got_healthy or got_healthy[-1] <= 0.9 * n) and time.monotonic() < deadline:
            if (m := healthy.recv_latest(timeout_ms=200)) is not None:
                got_healthy.append(m.seq)
        assert got_healthy and got_healthy[-1] > 0.9 * n  # it kept receiving through the burst
        # while the stalled viewer still sits on a full queue, new messages reach the healthy one
        probe, deadline = n, time.monotonic() + 5
        while True:
            assert time.monotonic() < deadline, "healthy viewer held back by the stalled one"
            pub.send(FrameMsg(seq=probe, stream_id="v", angle_deg=0.0, t_s=0.0, exposure_s=0.0,
                              data=np.ones(shape, np.float32)))
            m = healthy.recv_latest(timeout_ms=50)
            if m is not None and m.seq == probe:
                break
            probe += 1
        n = probe + 1
        first = viewer.recv_latest(timeout_ms=1000)  # the viewer wakes up: drains to its newest
        assert first is not None and viewer.skipped > 0
        latest, seq, deadline = first, n, time.monotonic() + 10
        while latest.seq < n:  # the publisher goes on; the viewer catches up with fresh frames
            assert time.monotonic() < deadline, f"viewer stuck at seq {latest.seq}"
            pub.send(FrameMsg(seq=seq, stream_id="v", angle_deg=0.0, t_s=0.0, exposure_s=0.0,
                              data=np.ones(shape, np.float32)))
            seq += 1
            latest = viewer.recv_latest(timeout_ms=20) or latest
        assert viewer.stats().missing > 0  # what the publisher dropped shows as a gap


def test_subscriber_counts_garbage_and_skips_to_latest() -> None:
    with Publisher(tcp_endpoint(0), sndhwm=3000) as pub, Subscriber(pub.endpoint, rcvhwm=3000) as sub:
        wait_subscribed(pub, sub)
        assert send_garbage(pub, np.random.default_rng(3), 1000) == 1000
        for i in range(5):
            assert pub.send(frame(i))
        time.sleep(0.2)
        got = sub.recv_latest_by_type(timeout_ms=1000)
        while sub.stats().rejected < 1000:
            got = sub.recv_latest_by_type(timeout_ms=200) or got
        assert got["frame"].seq == 4
        assert sub.stats().rejected == 1000 and sub.skipped >= 4


# ------------------------------------------------------------------------------------------------
# CURVE.


@pytest.fixture
def certs(tmp_path: Any) -> dict[str, Any]:
    import zmq.auth

    keys = tmp_path / "keys"
    allowed = tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    out = {}
    for name in ("server", "client", "intruder"):
        public, secret = zmq.auth.create_certificates(keys, name)
        out[name] = (public, secret)
    (allowed / "client.key").write_bytes((keys / "client.key").read_bytes())
    out["allowed"] = allowed
    return out


def test_curve_allowed_client_receives_unknown_client_does_not(certs: dict[str, Any]) -> None:
    server = CurveConfig(certs["server"][1], certs["allowed"])
    client = CurveClientConfig(certs["client"][1], certs["server"][0])
    intruder = CurveClientConfig(certs["intruder"][1], certs["server"][0])
    with FrameSender(tcp_endpoint(0), curve=server, timeout_ms=300, linger_ms=0) as tx:
        with FrameReceiver(tx.endpoint, curve=intruder) as bad, FrameReceiver(tx.endpoint) as plain:
            assert tx.send(frame(0)) is False  # neither is accepted as a peer
            with FrameReceiver(tx.endpoint, curve=client) as good:
                assert tx.send(frame(0), timeout_ms=5000)
                assert tx.send(frame(1), timeout_ms=5000)
                assert [m.seq for m in recv_all(good, 2)] == [0, 1]
            assert bad.recv(timeout_ms=100) is None and plain.recv(timeout_ms=10) is None


def test_curve_on_the_viewer_path(certs: dict[str, Any]) -> None:
    server = CurveConfig(certs["server"][1], certs["allowed"])
    client = CurveClientConfig(certs["client"][1], certs["server"][0])
    intruder = CurveClientConfig(certs["intruder"][1], certs["server"][0])
    with Publisher(tcp_endpoint(0), curve=server) as pub:
        with Subscriber(pub.endpoint, curve=client) as good, Subscriber(pub.endpoint, curve=intruder) as bad:
            wait_subscribed(pub, good)
            assert pub.send(frame(0))
            assert good.recv_latest(timeout_ms=2000) == frame(0)
            assert bad.recv_latest(timeout_ms=100) is None


def test_curve_config_errors_name_the_file(tmp_path: Any, certs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="expected a secret key file"):
        FrameSender(tcp_endpoint(0), curve=CurveConfig(certs["server"][0], certs["allowed"]))
    with pytest.raises(ValueError, match="no such file"):
        missing = CurveClientConfig(tmp_path / "nope.key_secret", certs["server"][0])
        FrameReceiver(tcp_endpoint(0), curve=missing)
    with pytest.raises(ValueError, match="expected a folder"):
        FrameSender(tcp_endpoint(0), curve=CurveConfig(certs["server"][1], tmp_path / "missing"))
