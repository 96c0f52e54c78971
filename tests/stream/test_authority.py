"""Series authority: only the sender that started a series may end or replace it (issue 12, finding 3).

Every test records 20 real frames on a bound recorder while a second, well-formed but foreign
sender injects one message; every real frame must be recorded. Each test fails on a receiver that
trusts any well-formed message.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tiltstream.stream import read_series
from tiltstream.stream.protocol import EndMsg, FrameMsg, StartMsg
from tiltstream.stream.recorder import Recorder
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import FrameReceiver, FrameSender, Subscriber, Publisher

Y, U = 9, 7
N = 20


def frame(i: int, sid: str = "real", seq: int | None = None) -> FrameMsg:
    return FrameMsg(seq=i if seq is None else seq, stream_id=sid, angle_deg=float(i % 140 - 70), t_s=0.1 * i,
                    exposure_s=0.05, data=np.full((Y, U), i, np.float32))


def start(sid: str = "real") -> StartMsg:
    return StartMsg(stream_id=sid, frame_shape=(Y, U), dtype="float32", scheme="golden_ratio")


def wait_until(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


INJECTIONS = {
    "foreign_stream_id": lambda: frame(3, sid="evil"),
    "forged_end": lambda: EndMsg(stream_id="real", n_frames=5, reason="complete"),
    "seq_plus_1000": lambda: frame(5, seq=1005),
    "foreign_start": lambda: start("evil"),
    "next_seq_from_foreign": lambda: frame(5),
}


@pytest.mark.parametrize("name", sorted(INJECTIONS))
def test_foreign_sender_cannot_end_replace_or_derail_the_series(tmp_path: Path, name: str) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(tcp_endpoint(0), path, bind=True) as rec:
        stop = threading.Event()
        runner = threading.Thread(target=rec.run, kwargs={"stop_event": stop, "until_end": True})
        runner.start()
        try:
            with FrameSender(rec.endpoint, bind=False, timeout_ms=5000) as real, \
                    FrameSender(rec.endpoint, bind=False, timeout_ms=5000) as evil:
                assert real.send(start())
                for i in range(5):
                    assert real.send(frame(i))
                wait_until(lambda: rec.frames_written == 5)
                assert evil.send(INJECTIONS[name]())
                wait_until(lambda: rec.stats.rejected >= 1)
                for i in range(5, N):
                    assert real.send(frame(i))
                assert real.send(EndMsg(stream_id="real", n_frames=N, reason="complete"))
                runner.join(20)
        finally:  # never close the socket under a running recorder
            stop.set()
            runner.join(20)
        stats = rec.stats
    assert not runner.is_alive()
    assert [(f.path.name, f.frames) for f in stats.files] == [("rec.h5", N)]
    got = read_series(path)
    assert got.frames[:, 0, 0].tolist() == list(range(N))
    assert stats.missing == 0 and stats.rejected == 1
    assert stats.rejects_by_reason == {"foreign_sender": 1}


def test_forged_seq_jump_from_the_sender_itself_is_not_taken_as_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(tcp_endpoint(0), path, bind=True) as rec, \
            FrameSender(rec.endpoint, bind=False, timeout_ms=5000) as tx:
        for msg in [start(), *(frame(i) for i in range(5)), frame(5, seq=1005), *(frame(i) for i in range(5, N)),
                    EndMsg(stream_id="real", n_frames=N, reason="complete")]:
            assert tx.send(msg)
        rec.run(until_end=True, idle_timeout_s=10)
        stats = rec.stats
    assert read_series(path).frames[:, 0, 0].tolist() == list(range(N))
    assert stats.rejects_by_reason == {"implausible_seq": 1} and stats.missing == 0


def test_stray_frame_before_start_does_not_take_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "rec.h5"
    with Recorder(tcp_endpoint(0), path, bind=True) as rec:
        with FrameSender(rec.endpoint, bind=False) as stray:
            assert stray.send(frame(0, sid="stray"))
            msg = rec.receiver.recv(timeout_ms=2000)
            assert msg is None
        with FrameSender(rec.endpoint, bind=False) as real:
            assert real.send(start())
            for i in range(3):
                assert real.send(frame(i))
            assert real.send(EndMsg(stream_id="real", n_frames=3, reason="complete"))
            rec.run(until_end=True, idle_timeout_s=10)
        stats = rec.stats
    assert [(f.path.name, f.stream_id, f.frames) for f in stats.files] == [("rec.h5", "real", 3)]
    assert stats.rejects_by_reason == {"no_start": 1}


def test_restarted_sender_takes_over_once_the_owner_has_gone(tmp_path: Path) -> None:
    with FrameReceiver(tcp_endpoint(0), bind=True, require_start=True) as rx:
        with FrameSender(rx.endpoint, bind=False) as first:
            assert first.send(start())
            assert first.send(frame(0))
            assert [rx.recv(2000).type_string for _ in range(2)] == ["start/1", "frame/1"]
        time.sleep(0.2)  # the first sender's connection closes
        with FrameSender(rx.endpoint, bind=False) as second:
            assert second.send(frame(1))  # continues the series ...
            assert second.send(start("next"))  # ... and starts the next one
            got = [rx.recv(2000) for _ in range(2)]
        assert [(m.type_string, m.stream_id) for m in got] == [("frame/1", "real"), ("start/1", "next")]
        assert rx.stats().rejected == 0


def test_a_real_long_gap_is_accepted_once_the_sequence_continues() -> None:
    with FrameReceiver(tcp_endpoint(0), bind=True) as rx, FrameSender(rx.endpoint, bind=False) as tx:
        for msg in [start(), frame(0), frame(1, seq=5000), frame(2, seq=5001), frame(3, seq=5002)]:
            assert tx.send(msg)
        got = [rx.recv(2000) for _ in range(5)]
        assert [getattr(m, "seq", None) for m in got] == [None, 0, 5000, 5001, 5002]
        stats = rx.stats()
        assert stats.rejected == 0 and stats.missing == 4999 and stats.gaps == 1


def test_viewer_drop_count_is_not_spoofed_by_a_huge_seq() -> None:
    from tiltstream.stream.protocol import MetricsMsg

    def metrics(seq: int) -> MetricsMsg:
        return MetricsMsg(stream_id="real", seq=seq, t_s=0.0, values={"x": 1.0})

    with Publisher(tcp_endpoint(0), sndhwm=100) as pub, Subscriber(pub.endpoint, rcvhwm=100) as sub:
        wait_until(lambda: pub.poll_subscriptions() > 0)
        for seq in [0, 1, 2**62, 2, 3]:
            assert pub.send(metrics(seq))
        got = []
        deadline = time.monotonic() + 5
        while len(got) < 4 and time.monotonic() < deadline:
            got += sub.recv_all(timeout_ms=200)
        assert [m.seq for m in got] == [0, 1, 2, 3]
        stats = sub.stats()
        assert stats.missing == 0 and stats.rejects_by_reason == {"implausible_seq": 1}
