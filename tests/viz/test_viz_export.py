"""Slice images and movies without Qt; the view command (headless snapshot) end to end."""

import argparse
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tiltstream.stream.messages import VolumeMsg
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import Publisher
from tiltstream.viz import launch_monitor, orthoview_rgb, write_movie
from tiltstream.viz.colormaps import COLORMAPS, lut
from tiltstream.viz.export import apply_lut, ffmpeg_executable, history_frames
from tiltstream.viz.history import VolumeEntry


@pytest.fixture
def vol(rng):
    return rng.random((11, 17, 23), dtype=np.float32)


def test_colormaps_are_256_rgb_ramps():
    for name in COLORMAPS:
        table = lut(name)
        assert table.shape == (256, 3) and table.dtype == np.uint8
        assert table[0].sum() < table[-1].sum()  # dark to bright
    assert lut("gray")[128].tolist() == [128, 128, 128]
    with pytest.raises(ValueError, match="viridis"):
        lut("jet")


def test_orthoview_layout_and_orientation(vol):
    img = orthoview_rgb(vol, (5, 8, 11), levels=(0.0, 1.0), colormap="gray", min_height=1, panel_names=False)
    nz, ny, nx = vol.shape
    gap = 3
    assert img.shape == (ny + nz + gap, nx + nz + gap, 3)
    np.testing.assert_array_equal(img[:ny, :nx], apply_lut(vol[5], (0.0, 1.0)))  # XY top left
    np.testing.assert_array_equal(img[:ny, nx + gap:], apply_lut(vol[:, :, 11].T, (0.0, 1.0)))  # YZ: Z right
    np.testing.assert_array_equal(img[ny + gap:, :nx], apply_lut(vol[:, 8, :], (0.0, 1.0)))  # XZ below XY
    big = orthoview_rgb(vol, (5, 8, 11), levels=(0.0, 1.0), min_height=200)
    assert 200 <= big.shape[0] < 200 + ny + nz


def test_gif_of_the_slice_history(tmp_path, vol):
    Image = pytest.importorskip("PIL.Image")
    entries = [VolumeEntry(seq=i, t_s=float(i), data=vol * (i + 1), source="sirt", n_frames_used=i, voxel_nm=None,
                           received_s=0.0) for i in range(4)]
    frames = history_frames(entries, (5, 8, 11), vol.shape, colormap="viridis", min_height=120)
    assert len(frames) == 4 and frames[0].shape == frames[3].shape
    assert frames[3].mean() > frames[0].mean()  # one set of levels: brightness changes are data changes
    path = write_movie(frames, tmp_path / "slices.gif", fps=5)
    with Image.open(path) as gif:
        assert gif.n_frames == 4 and gif.size == (frames[0].shape[1], frames[0].shape[0])
    with pytest.raises(ValueError, match=".gif or .mp4"):
        write_movie(frames, tmp_path / "slices.avi")
    with pytest.raises(ValueError, match="empty"):
        history_frames([], (0, 0, 0), vol.shape)


def test_mp4_of_the_slice_history(tmp_path, vol):
    frames = [orthoview_rgb(vol, (5, 8, 11), min_height=64), orthoview_rgb(vol, (4, 7, 10), min_height=64)] * 3
    assert ffmpeg_executable() is not None  # imageio-ffmpeg is a dependency: MP4 export works everywhere
    path = write_movie(frames, tmp_path / "slices.mp4", fps=4)
    head = path.read_bytes()[:12]
    assert head[4:8] == b"ftyp"  # an ISO base-media (MP4) file
    probe = subprocess.run([ffmpeg_executable(), "-v", "error", "-i", str(path), "-f", "null", "-"],
                           capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    with pytest.raises(ValueError, match=r"expected every frame"):
        write_movie([frames[0], frames[0][:-2]], tmp_path / "bad.mp4")


def test_mp4_without_ffmpeg_names_the_install(tmp_path, vol, monkeypatch):
    from tiltstream.viz import export

    monkeypatch.setattr(export, "ffmpeg_executable", lambda: None)
    with pytest.raises(RuntimeError, match="imageio-ffmpeg"):
        write_movie([orthoview_rgb(vol, (5, 8, 11), min_height=64)], tmp_path / "slices.mp4")


def test_view_command_registers_and_checks_its_arguments():
    from tiltstream import cmd_view

    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command")
    cmd_view.register(sub)
    args = p.parse_args(["view", "--connect", "tcp://127.0.0.1:5557", "--snapshot", "x.png", "--after", "2",
                         "--size", "800x600"])
    assert args.func is cmd_view.cmd_view and args.after == 2.0 and args.size == (800, 600)
    with pytest.raises(ValueError, match="--connect"):
        cmd_view.cmd_view(p.parse_args(["view"]))
    with pytest.raises(SystemExit):
        p.parse_args(["view", "--size", "huge"])


@pytest.mark.timeout(60)
def test_headless_snapshot_of_a_live_stream(tmp_path, vol):
    """`python -m tiltstream view --connect EP --snapshot out.png` (what a detached monitor runs), in a child."""
    out = tmp_path / "monitor.png"
    movie = tmp_path / "slices.gif"
    with Publisher(tcp_endpoint(0)) as pub:
        stop = threading.Event()

        def publish():
            seq = 0
            while not stop.is_set():
                seq += 1
                pub.send(VolumeMsg(stream_id="s" * 8, seq=seq, t_s=0.5 * seq, data=vol * seq, source="sirt",
                                   n_frames_used=seq))
                time.sleep(0.2)

        sender = threading.Thread(target=publish, daemon=True)
        sender.start()
        try:
            proc = launch_monitor(pub.endpoint, snapshot=out, movie=movie, after_s=2.5, size=(1000, 700), detach=True)
            assert isinstance(proc, subprocess.Popen) and proc.wait(timeout=45) == 0
        finally:
            stop.set()
            sender.join(2)
    from pyqtgraph.Qt import QtGui

    img = QtGui.QImage(str(out))
    assert (img.width(), img.height()) == (1000, 700)
    assert movie.stat().st_size > 1000
    result = subprocess.run([sys.executable, "-m", "tiltstream", "view", "--connect", tcp_endpoint(1), "--snapshot",
                             str(tmp_path / "empty.png"), "--after", "0.5"], capture_output=True, text=True,
                            timeout=45)
    assert result.returncode == 1 and "no data arrived" in result.stderr  # says so instead of a silent blank
