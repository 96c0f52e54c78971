"""``tiltstream sim | replay | watch`` over real sockets: every consumer gets the whole series."""

from __future__ import annotations

import argparse
import threading

import numpy as np
import pytest
import tifffile

from tiltstream.cmd_acquire import register
from tiltstream.stream.messages import EndMsg, FrameMsg, StartMsg

transport = pytest.importorskip("tiltstream.stream.transport")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiltstream")
    register(parser.add_subparsers(dest="command"))
    return parser


def _collect(endpoint: str, out: list, ready: threading.Event) -> None:
    with transport.FrameReceiver(endpoint) as receiver:
        ready.set()
        while True:
            msg = receiver.recv(timeout_ms=10000)
            if msg is None:
                return
            out.append(msg)
            if isinstance(msg, EndMsg):
                return


def _run_with_consumers(argv: list[str], endpoints: list[str]) -> tuple[int, list[list]]:
    got: list[list] = [[] for _ in endpoints]
    threads = []
    for endpoint, out in zip(endpoints, got, strict=True):
        ready = threading.Event()
        threads.append(threading.Thread(target=_collect, args=(endpoint, out, ready), daemon=True))
        threads[-1].start()
        ready.wait(5)
    args = _parser().parse_args(argv)
    rc = args.func(args)
    for t in threads:
        t.join(timeout=15)
    return rc, got


def test_sim_pushes_the_series_to_every_consumer(tmp_path, capsys):
    a, b = f"ipc://{tmp_path}/a.sock", f"ipc://{tmp_path}/b.sock"
    rc, (got_a, got_b) = _run_with_consumers(
        ["sim", "--phantom", "nanorod", "--size", "16", "--frames", "5", "--dose", "50", "--speed", "max",
         "--heating-rate", "2", "--push", f"{a},{b}", "--pub", f"ipc://{tmp_path}/viewers.sock"],
        [a, b],
    )
    assert rc == 0
    for got in (got_a, got_b):
        assert [type(m) for m in got] == [StartMsg] + [FrameMsg] * 5 + [EndMsg]
        assert got[0].experiment["simulation"]["phantom"] == "nanorod" and got[0].pixel_nm > 0
        assert got[-1].reason == "complete"
    assert [f.data.tobytes() for f in got_a[1:-1]] == [f.data.tobytes() for f in got_b[1:-1]]
    assert "sim: 5 frames" in capsys.readouterr().out


def test_replay_command(tmp_path, rng):
    from tiltstream.stream import TiltSeries, write_series

    series = TiltSeries(frames=rng.random((3, 8, 6)).astype(np.float32), angles_deg=[0.0, 10.0, -10.0],
                        times_s=[0.0, 0.05, 0.1], exposure_s=[0.01] * 3)
    write_series(tmp_path / "r.h5", series)
    endpoint = f"ipc://{tmp_path}/r.sock"
    rc, (got,) = _run_with_consumers(["replay", str(tmp_path / "r.h5"), "--speed", "max", "--push", endpoint],
                                     [endpoint])
    assert rc == 0
    assert got[0].frame_shape == (8, 6) and got[0].experiment["replay"]["source"] == str(tmp_path / "r.h5")
    np.testing.assert_array_equal(np.stack([m.data for m in got if isinstance(m, FrameMsg)]), series.frames)


def test_watch_command(tmp_path, rng):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, angle in enumerate((-20.0, 35.5)):
        tifffile.imwrite(folder / f"tilt_{angle:+.1f}deg_{i:04d}.tif", rng.integers(0, 9, (7, 5)).astype(np.uint16))
    endpoint = f"ipc://{tmp_path}/w.sock"
    rc, (got,) = _run_with_consumers(
        ["watch", str(folder), "--angle-from", "filename", "--settle", "0.1", "--poll", "0.05",
         "--max-frames", "2", "--push", endpoint],
        [endpoint],
    )
    assert rc == 0
    assert [m.angle_deg for m in got if isinstance(m, FrameMsg)] == [-20.0, 35.5]
    assert got[-1].reason == "complete"


def test_an_output_is_required(tmp_path):
    args = _parser().parse_args(["replay", str(tmp_path / "x.h5")])
    with pytest.raises(ValueError, match="--push"):
        args.func(args)
