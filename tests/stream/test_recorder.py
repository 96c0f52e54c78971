"""Recorder: lossless stream -> NXtomo files; hostile input, series changes, restarts, SIGKILL."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tiltstream.stream import read_series
from tiltstream.stream.garbage import garbage_messages
from tiltstream.stream.protocol import EndMsg, FrameMsg, ProtocolError, StartMsg, VolumeMsg, unpack
from tiltstream.stream.recorder import Recorder, series_path
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import FanOutSender, FrameReceiver, FrameSender

Y, U = 13, 11
_names = itertools.count()


def inproc() -> str:
    return f"inproc://test-recorder-{next(_names)}"


def data(i: int, shape: tuple[int, int] = (Y, U)) -> np.ndarray:
    return np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape) + 1000 * i


def angle(i: int) -> float:
    return float((i * 137.50776405) % 140.0 - 70.0)  # golden-ratio-like, all different


def frame(i: int, stream_id: str = "s1", shape: tuple[int, int] = (Y, U), **extra: Any) -> FrameMsg:
    return FrameMsg(seq=i, stream_id=stream_id, angle_deg=angle(i), t_s=0.1 * i, exposure_s=0.05,
                    data=data(i, shape), **extra)


def start(stream_id: str = "s1", shape: tuple[int, int] = (Y, U)) -> StartMsg:
    return StartMsg(stream_id=stream_id, frame_shape=shape, dtype="float32", scheme="golden_ratio",
                    pixel_nm=0.25, tilt_range_deg=(-70.0, 70.0),
                    experiment={"sample": "Au nanorod", "ramp_C_per_min": 5.0})


def end(stream_id: str = "s1", n: int = 0) -> EndMsg:
    return EndMsg(stream_id=stream_id, n_frames=n, reason="complete")


class Running:
    """A recorder's run() in a thread; join() re-raises what it raised."""

    def __init__(self, recorder: Recorder, **kwargs: Any) -> None:
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(recorder,), kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, recorder: Recorder, **kwargs: Any) -> None:
        try:
            recorder.run(**kwargs)
        except BaseException as exc:  # noqa: BLE001 - surfaced in join()
            self.error = exc

    def join(self, timeout: float = 30) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "recorder did not stop"
        if self.error is not None:
            raise self.error


def check_frames(path: Path, seqs: list[int], *, stream_id: str = "s1") -> Any:
    series = read_series(path)
    assert series.n_frames == len(seqs)
    np.testing.assert_array_equal(series.extra["seq"], seqs)
    np.testing.assert_array_equal(series.angles_deg, [angle(i) for i in seqs])
    np.testing.assert_array_equal(series.times_s, [0.1 * i for i in seqs])
    for k, i in enumerate(seqs):
        np.testing.assert_array_equal(series.frames[k], data(i, series.frame_shape))
    assert series.metadata["stream_id"] == stream_id
    return series


# ------------------------------------------------------------------------------------------------
# In-process recorders.


def test_records_a_series_with_its_metadata(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with FrameSender(inproc(), sndhwm=100) as tx, Recorder(tx.endpoint, path) as rec:
        assert tx.send(start())
        for i in range(6):
            assert tx.send(frame(i, temperature_C=300.0 + i, stage_xyz=(1.0, 2.0, float(i))))
        assert tx.send(end(n=6))
        stats = rec.run(until_end=True, idle_timeout_s=5)
    series = check_frames(path, list(range(6)))
    np.testing.assert_array_equal(series.extra["temperature_C"], 300.0 + np.arange(6))
    np.testing.assert_array_equal(series.extra["stage_xyz"][:, 2], np.arange(6))
    np.testing.assert_allclose(series.exposure_s, 0.05)
    meta = series.metadata
    assert meta["experiment"] == {"sample": "Au nanorod", "ramp_C_per_min": 5.0}
    assert meta["scheme"] == "golden_ratio" and meta["tilt_range_deg"] == [-70.0, 70.0]
    assert meta["start_received"] is True and meta["recording_closed"] is True
    assert series.pixel_nm == pytest.approx(0.25)
    assert stats.frames_written == 6 and stats.rejected == 0 and stats.last_seq == 5
    (file,) = stats.files
    assert (file.path, file.frames, file.end_reason, file.announced) == (path, 6, "complete", 6)
    assert stats.summary() == f"recorded 6 frames in 1 file ({path}); 0 rejected; 0 missing in 0 gaps"


def test_refuses_to_replace_a_file(tmp_path: Path) -> None:
    (tmp_path / "run.h5").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="run.h5: refusing to replace"):
        Recorder(inproc(), tmp_path / "run.h5")
    with pytest.raises(FileNotFoundError, match="expected an existing folder"):
        Recorder(inproc(), tmp_path / "no" / "run.h5")
    assert (tmp_path / "run.h5").read_bytes() == b"precious"
    assert series_path(tmp_path / "run.h5", 3) == tmp_path / "run_003.h5"


def test_rejects_hostile_messages_and_keeps_recording(tmp_path: Path) -> None:
    n_garbage = 1100
    expected: dict[str, int] = {}
    for parts in garbage_messages(np.random.default_rng(11), n_garbage):
        with pytest.raises(ProtocolError) as info:
            unpack(parts)
        expected[info.value.reason] = expected.get(info.value.reason, 0) + 1
    path = tmp_path / "run.h5"
    with FrameSender(inproc(), sndhwm=2 * n_garbage) as tx, Recorder(tx.endpoint, path) as rec:
        running = Running(rec, until_end=True, idle_timeout_s=10)
        assert tx.send(start())
        good = 0
        for i, parts in enumerate(garbage_messages(np.random.default_rng(11), n_garbage)):
            assert tx.send_raw(parts)
            if i % 100 == 0:
                assert tx.send(frame(good))
                good += 1
        assert tx.send(VolumeMsg(stream_id="s1", seq=0, t_s=0.0, data=np.ones((2, 2, 2), np.float32),
                                 source="sirt", n_frames_used=1))
        assert tx.send(frame(good, shape=(U, Y)))  # transposed: not like the series' frames
        assert tx.send(frame(good + 1))
        assert tx.send(end(n=good + 2))
        running.join()
        stats = rec.stats
    expected.update(unexpected_type=1, series_mismatch=1)
    assert stats.rejects_by_reason == expected
    assert stats.rejected == n_garbage + 2
    check_frames(path, list(range(good)) + [good + 1])
    assert stats.frames_written == good + 1 and stats.missing == 0


def test_frames_without_start_are_no_series_and_take_no_file_name(tmp_path: Path) -> None:
    path = tmp_path / "run.nxs"
    (tmp_path / "run_002.nxs").write_bytes(b"someone else's")
    with FrameSender(inproc(), sndhwm=100) as tx, Recorder(tx.endpoint, path) as rec:
        for msg in [frame(5), frame(6), end("s1", 9), start("s2"), frame(0, "s2"), frame(1, "s2"), end("s2", 2),
                    frame(9), start("s3"), frame(0, "s3", pixel_nm=0.5), frame(0, "s4")]:
            assert tx.send(msg)
        rec.run(idle_timeout_s=0.3)
        stats = rec.stats
    # the stray frames of s1 (no start/1) are rejected: the first real series gets the --out name
    assert [(f.path.name, f.stream_id, f.frames, f.end_reason) for f in stats.files] == [
        ("run.nxs", "s2", 2, "complete"), ("run_003.nxs", "s3", 1, None)]
    assert check_frames(path, [0, 1], stream_id="s2").metadata["start_received"]
    third = check_frames(tmp_path / "run_003.nxs", [0], stream_id="s3")
    assert third.pixel_nm == pytest.approx(0.25) and "pixel_nm" in third.extra  # start/1 wins
    assert read_series(path).metadata["recording_closed"] is True
    assert (tmp_path / "run_002.nxs").read_bytes() == b"someone else's"
    assert stats.rejects_by_reason == {"no_start": 5}  # s1's two frames and end, frame 9 of s1, s4
    assert stats.missing == 0 and stats.gaps == 0


def test_run_stops_on_event_max_frames_and_idle(tmp_path: Path, virtual_clock) -> None:
    with FrameSender(inproc(), sndhwm=100) as tx, \
            Recorder(tx.endpoint, tmp_path / "a.h5", clock=virtual_clock) as rec:
        assert tx.send(start())
        for i in range(10):
            assert tx.send(frame(i))
        assert rec.run(max_frames=4).frames_written == 4
        stop = threading.Event()
        running = Running(rec, stop_event=stop)
        deadline = time.monotonic() + 30
        while rec.frames_written < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert rec.frames_written == 10
        assert running.thread.is_alive()  # nothing limits this run but the event ...
        stop.set()
        running.join()  # ... which ends it
        receive = rec.receiver.recv

        def receive_on_the_virtual_clock(timeout_ms: int = 1000) -> Any:
            msg = receive(timeout_ms=timeout_ms)
            if msg is None:  # a wait that ran its course takes its time on the recorder's clock
                virtual_clock.wait(timeout_ms / 1000)
            return msg

        rec.receiver.recv = receive_on_the_virtual_clock
        began = virtual_clock()
        rec.run(idle_timeout_s=0.25, poll_ms=100)  # nothing arrives: stops once 0.25 s passed idle
        assert 0.25 <= virtual_clock() - began < 0.255  # not earlier, and at the first wait after


def test_publisher_restart_continues_then_starts_a_new_series(tmp_path: Path) -> None:
    path = tmp_path / "run.h5"
    with FrameSender(tcp_endpoint(0), timeout_ms=5000) as first:
        endpoint = first.endpoint
        rec = Recorder(endpoint, path)
        running = Running(rec, max_frames=25, idle_timeout_s=10)
        assert first.send(start())
        for i in range(10):
            assert first.send(frame(i))
    with FrameSender(endpoint, timeout_ms=5000) as second:  # same port, a new process in practice
        for i in range(10, 20):
            assert second.send(frame(i))
        assert second.send(start("s2"))  # no end/1 for s1: the publisher crashed before it
        for i in range(5):
            assert second.send(frame(i, "s2"))
        running.join()
    rec.close()
    stats = rec.stats
    assert [(f.path.name, f.frames) for f in stats.files] == [("run.h5", 20), ("run_002.h5", 5)]
    check_frames(path, list(range(20)))
    check_frames(tmp_path / "run_002.h5", list(range(5)), stream_id="s2")
    assert stats.rejected == 0 and stats.missing == 0


# ------------------------------------------------------------------------------------------------
# Recorder processes (the `tiltstream record` sub-command).

_RECORD = textwrap.dedent(
    """
    import argparse, logging, sys
    from tiltstream.cmd_record import register
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
    """
)


def record_process(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", _RECORD, "record", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def test_ten_thousand_frames_reach_recorder_and_second_consumer(tmp_path: Path) -> None:
    n, shape = 10_000, (16, 16)
    path = tmp_path / "fast.h5"
    with FanOutSender({"record": tcp_endpoint(0), "recon": tcp_endpoint(0)}, timeout_ms=10_000) as fan:
        child = record_process("--connect", fan.endpoints["record"], "--out", str(path), "--until-end",
                               "--idle-timeout", "30", "--ack-every", "1000")
        seen: list[tuple[int, float]] = []

        def recon() -> None:
            with FrameReceiver(fan.endpoints["recon"]) as rx:
                while (msg := rx.recv(timeout_ms=20_000)) is not None and not isinstance(msg, EndMsg):
                    if isinstance(msg, FrameMsg):
                        seen.append((msg.seq, msg.angle_deg))

        consumer = threading.Thread(target=recon, daemon=True)
        consumer.start()
        try:
            assert fan.send(start(shape=shape))
            for i in range(n):  # full speed: the slower consumer sets the pace
                assert fan.send(FrameMsg(seq=i, stream_id="s1", angle_deg=angle(i), t_s=0.1 * i,
                                         exposure_s=0.05, data=data(i, shape)))
            assert fan.send(end(n=n))
            out, _ = child.communicate(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
        consumer.join(30)
        assert not consumer.is_alive(), "the second consumer never saw end/1"
    assert child.returncode == 0, out
    assert out.strip().splitlines()[-1] == (
        f"recorded {n} frames in 1 file ({path}); 0 rejected; 0 missing in 0 gaps")
    assert len(re.findall(r"ack n=\d+ seq=\d+", out)) == n // 1000
    assert seen == [(i, angle(i)) for i in range(n)]
    series = read_series(path)
    assert series.n_frames == n
    np.testing.assert_array_equal(series.extra["seq"], np.arange(n))
    np.testing.assert_array_equal(series.angles_deg, [angle(i) for i in range(n)])
    np.testing.assert_array_equal(series.frames[:, 0, 0], 1000.0 * np.arange(n))
    np.testing.assert_array_equal(series.frames[-1], data(n - 1, shape))


def test_sigkill_leaves_every_acknowledged_frame(tmp_path: Path) -> None:
    from nxtomo.application.nxtomo import NXtomo

    path = tmp_path / "killed.h5"
    stop = threading.Event()
    with FrameSender(tcp_endpoint(0), timeout_ms=200, linger_ms=0) as tx:
        child = record_process("--connect", tx.endpoint, "--out", str(path), "--ack-every", "1")

        def publish() -> None:
            assert tx.send(start(), timeout_ms=10_000)
            i = 0
            while not stop.is_set():
                if tx.send(frame(i, temperature_C=20.0 + i)):
                    i += 1
                time.sleep(0.002)

        publisher = threading.Thread(target=publish, daemon=True)
        publisher.start()
        acked = 0
        try:
            assert child.stdout is not None
            for line in child.stdout:
                if match := re.search(r"ack n=(\d+) seq=(\d+)", line):
                    acked = int(match[1])
                    assert int(match[2]) == acked - 1
                    if acked >= 40:
                        break
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=10)
        finally:
            stop.set()
            if child.poll() is None:
                child.kill()
            child.stdout.close()
        publisher.join(5)
    assert child.returncode == -signal.SIGKILL and acked >= 40

    series = read_series(path)
    assert series.n_frames >= acked and series.metadata["recording_closed"] is False
    check_frames(path, list(range(series.n_frames)))
    np.testing.assert_array_equal(series.extra["temperature_C"], 20.0 + np.arange(series.n_frames))
    nx = NXtomo().load(str(path), "entry", detector_data_as="as_numpy_array")
    assert nx.instrument.detector.data.shape[0] >= acked
    expected = np.stack([data(i) for i in range(acked)])
    np.testing.assert_array_equal(nx.instrument.detector.data[:acked], expected)
    rotation = nx.sample.rotation_angle
    assert str(rotation.units) == "degree"
    np.testing.assert_array_equal(rotation.magnitude[:acked], [angle(i) for i in range(acked)])


def test_sigterm_closes_the_file_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "stopped.h5"
    with FrameSender(tcp_endpoint(0), timeout_ms=10_000, linger_ms=0) as tx:
        child = record_process("--connect", tx.endpoint, "--out", str(path), "--ack-every", "1")
        try:
            assert tx.send(start())
            for i in range(5):
                assert tx.send(frame(i))
            assert child.stdout is not None
            for line in child.stdout:
                if "ack n=5 " in line:
                    break
            child.send_signal(signal.SIGTERM)
            out, _ = child.communicate(timeout=10)
        finally:
            if child.poll() is None:
                child.kill()
    assert child.returncode == 0, out
    summary = f"recorded 5 frames in 1 file ({path}); 0 rejected; 0 missing in 0 gaps"
    assert out.strip().splitlines()[-1] == summary
    assert check_frames(path, list(range(5))).metadata["recording_closed"] is True


def test_record_command_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from tiltstream.cmd_record import register

    parser = argparse.ArgumentParser(prog="tiltstream")
    register(parser.add_subparsers())
    with pytest.raises(SystemExit):
        parser.parse_args(["record", "--out", "x.h5"])  # neither --connect nor --bind
    assert "one of the arguments --connect --bind is required" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parser.parse_args(["record", "--connect", "tcp://127.0.0.1:1", "--out", "x.h5", "--max-frames", "0"])
    args = parser.parse_args(["record", "--bind", "tcp://127.0.0.1:0", "--out", str(tmp_path / "c.h5"),
                              "--curve-key", "k.key_secret"])
    with pytest.raises(ValueError, match="--curve-allowed"):
        args.func(args)

    with FrameSender(inproc(), bind=False, sndhwm=100) as tx:  # queued until the recorder binds
        assert tx.send(start())
        for i in range(3):
            assert tx.send(frame(i))
        args = parser.parse_args(["record", "--bind", tx.endpoint, "--out", str(tmp_path / "c.h5"),
                                  "--max-frames", "2"])
        assert args.func(args) == 0
    summary = f"recorded 2 frames in 1 file ({tmp_path / 'c.h5'}); 0 rejected; 0 missing in 0 gaps"
    assert capsys.readouterr().out == summary + "\n"
    assert read_series(tmp_path / "c.h5").metadata["recording_closed"] is True


@pytest.mark.parametrize("budget, big_arrives", [(None, True), ("1M", False)])
def test_memory_budget_bounds_what_a_peer_can_make_the_recorder_receive(
        tmp_path: Path, budget: str | None, big_arrives: bool) -> None:
    import argparse

    from tiltstream.cmd_record import register

    parser = argparse.ArgumentParser(prog="tiltstream")
    register(parser.add_subparsers())
    argv = ["record", "--bind", "tcp://127.0.0.1:0", "--out", str(tmp_path / "run.h5")]
    args = parser.parse_args(argv + (["--memory-budget", budget] if budget else []))
    assert args.memory_budget == (None if budget is None else 2**20)
    path = tmp_path / "run.h5"
    with Recorder(tcp_endpoint(0), path, bind=True, memory_budget=args.memory_budget) as rec:
        # 1 MiB over a queue of 32 messages: parts up to ~31 KiB; a 200 KiB part disconnects its sender
        with FrameSender(rec.endpoint, bind=False) as stranger:
            assert stranger.send_raw([b"\x81\xa4type\xa7frame/1", bytes(200_000)])
            time.sleep(0.3)
        with FrameSender(rec.endpoint, bind=False) as tx:
            for msg in [start(), frame(0), frame(1), end(n=2)]:
                assert tx.send(msg)
            rec.run(until_end=True, idle_timeout_s=10)
        stats = rec.stats
    check_frames(path, [0, 1])
    assert (stats.rejected == 1) is big_arrives and stats.rejected <= 1


def test_memory_budget_option_says_what_it_expected(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from tiltstream.cmd_recon import engine_config
    from tiltstream.cmd_recon import register as register_recon

    parser = argparse.ArgumentParser(prog="tiltstream")
    register_recon(parser.add_subparsers())
    args = parser.parse_args(["recon", "--connect", "tcp://127.0.0.1:1", "--memory-budget", "512M"])
    assert engine_config(args).memory_budget_bytes == 512 * 2**20
    with pytest.raises(SystemExit):
        parser.parse_args(["recon", "--connect", "tcp://127.0.0.1:1", "--memory-budget", "lots"])
    assert "expected a size like '8G', '512M' or bytes, got 'lots'" in capsys.readouterr().err
    assert engine_config(args).bin == 1
    assert engine_config(parser.parse_args(["recon", "--connect", "tcp://127.0.0.1:1", "--bin", "4"])).bin == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["recon", "--connect", "tcp://127.0.0.1:1", "--bin", "0"])
