"""Series authority: only the sender that started a series may end or replace it (issue 12, finding 3).

Every test records 20 real frames on a bound recorder while a second, well-formed but foreign
sender injects one message; every real frame must be recorded. Each test fails on a receiver that
trusts any well-formed message. The owner stays the owner across a reconnect, and peers that only
connect and leave never stall a receiver.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import pytest
import zmq

from tiltstream.stream import read_series
from tiltstream.stream.authority import SENDER_PROPERTY
from tiltstream.stream.protocol import EndMsg, FrameMsg, StartMsg, pack
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


def owner_socket(endpoint: str) -> zmq.Socket:
    """A sender with a fixed token: each call is a new connection of the same sender (as a reconnect)."""
    tx = zmq.Context.instance().socket(zmq.PUSH)
    tx.setsockopt(zmq.METADATA, f"{SENDER_PROPERTY}:owner".encode())
    tx.connect(endpoint)
    return tx


def test_an_owner_that_reconnects_stays_the_owner() -> None:
    with FrameReceiver(tcp_endpoint(0), bind=True, require_start=True) as rx:
        first = owner_socket(rx.endpoint)
        again = None
        try:
            for msg in [start(), frame(0)]:
                first.send_multipart(pack(msg))
            assert [rx.recv(2000).type_string for _ in range(2)] == ["start/1", "frame/1"]
            with FrameSender(rx.endpoint, bind=False) as evil:
                time.sleep(0.1)  # its connection is up first
                first.close(linger=0)  # the link drops ...
                time.sleep(0.2)
                again = owner_socket(rx.endpoint)  # ... and the sender reconnects (often on the same descriptor)
                again.send_multipart(pack(frame(1)))
                assert rx.recv(2000).seq == 1
                assert evil.send(EndMsg(stream_id="real", n_frames=2, reason="complete"))
                assert rx.recv(500) is None
                assert rx.stats().rejects_by_reason == {"foreign_sender": 1}
                for i in range(2, 5):
                    again.send_multipart(pack(frame(i)))
                assert [rx.recv(2000).seq for _ in range(3)] == [2, 3, 4]
        finally:
            for tx in (first, again):
                if tx is not None:
                    tx.close(linger=0)
        assert rx.stats().rejects_by_reason == {"foreign_sender": 1}


def idle_peers(endpoint: str, n: int) -> int:
    """``n`` peers that connect over TCP and leave without sending anything; how many got in."""
    address = endpoint.removeprefix("tcp://").rsplit(":", 1)
    for i in range(n):
        try:  # a lost SYN is sent again after 1 s and 3 s
            socket.create_connection((address[0], int(address[1])), timeout=5).close()
        except TimeoutError:  # the receiver takes no more connections
            return i
    return n


def receive_among_idle_peers(report: Connection) -> None:
    """What a receiver gets from its series' sender while 3000 idle peers come and go, twice: while
    it is busy elsewhere, and while it waits in one long ``recv``. Sent to ``report`` before closing."""
    with FrameReceiver(tcp_endpoint(0), bind=True, require_start=True) as rx, \
            FrameSender(rx.endpoint, bind=False, timeout_ms=5000) as owner:
        got: dict = {"sent": [owner.send(msg) for msg in (start(), frame(0))]}
        got["before"] = [(m.type_string, getattr(m, "seq", None)) for m in (rx.recv(2000), rx.recv(2000))]
        got["busy: idle peers"] = idle_peers(rx.endpoint, 3000)
        owner.send(frame(1))
        got["busy: then"] = getattr(rx.recv(5000), "seq", None)
        waited: list = []
        waiting = threading.Thread(target=lambda: waited.append(rx.recv(20_000)))
        waiting.start()
        got["waiting: idle peers"] = idle_peers(rx.endpoint, 3000)
        owner.send(frame(2))
        waiting.join(10)
        got["waiting: then"] = [getattr(m, "seq", None) for m in waited]
        got["rejected"] = rx.stats().rejected
        report.send(got)  # a stalled receiver cannot even be closed: libzmq deadlocks


def test_peers_that_connect_and_leave_without_sending_never_stall_the_receiver() -> None:
    spawn = multiprocessing.get_context("spawn")  # the receiver in a process of its own, as it may hang
    report, child_end = spawn.Pipe(duplex=False)
    child = spawn.Process(target=receive_among_idle_peers, args=(child_end,))
    child.start()
    try:
        got = report.recv() if report.poll(60) else None
        child.join(10)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    assert got == {"sent": [True, True], "before": [("start/1", None), ("frame/1", 0)],
                   "busy: idle peers": 3000, "busy: then": 1,
                   "waiting: idle peers": 3000, "waiting: then": [2], "rejected": 0}
    assert child.exitcode == 0
