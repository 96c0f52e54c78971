"""`tiltstream demo` end to end on a tiny phantom: nothing lost, a 4-D result, a summary, the monitor."""

import json
import time

import h5py
import numpy as np
import pytest

from tiltstream import demo
from tiltstream.cli import build_parser, main
from tiltstream.viz import app as viz_app

TINY = ["demo", "--size", "16", "--frames", "40", "--speed", "400", "--window", "20", "--device", "cpu"]


def png_pixels(path) -> np.ndarray:
    from pyqtgraph.Qt import QtGui

    image = QtGui.QImage(str(path)).convertToFormat(QtGui.QImage.Format.Format_RGB32)
    assert not image.isNull(), path
    buf = np.frombuffer(image.constBits(), np.uint8, count=image.sizeInBytes())
    return buf.reshape(image.height(), image.bytesPerLine() // 4, 4)[:, : image.width(), :3]


def test_demo_runs_headless_loses_nothing_and_snapshots_the_monitor(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = tmp_path / "demo"
    assert main([*TINY, "--out-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "lost 0" in text and "monitor snapshot (headless)" in text
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_recorded"] == 40 and summary["frames_reconstructed_live"] == 40
    assert summary["live"]["messages_rejected"] == 0
    assert summary["live_final_nrmse"] < 0.6
    assert 0 < summary["result_4d"]["mean_nrmse"] < 0.5
    assert summary["result_4d"]["iterations"] == demo.OFFLINE_SIRT_ITERATIONS and "(300 iterations)" in text
    # both live methods scored against the truth at their volumes' own times (tests/recon/test_live_scores.py)
    sirt, dip = summary["live_sirt"], summary["online_dip"]
    assert sirt["volumes_scored"] >= 2 and 0 < sirt["last_nrmse"] < 0.6 and sirt["mean_nrmse"] <= 1.0
    assert dip["estimates_scored"] >= 1 and 0 < dip["at_end_nrmse"] < 1.0  # at least the end-of-series estimate
    assert summary["live"]["dip_estimates"] == dip["estimates_scored"]
    assert "online DIP" in text and "live SIRT" in text
    with h5py.File(out / "result_4d.h5", "r") as f:
        assert f["volumes"].shape[1:] == (16, 16, 16)
        traces = json.loads(f.attrs["live_traces_json"])
    assert len(traces["change_sigma"]["t_s"]) == len(traces["change_sigma"]["value"]) > 0
    assert len(traces["dip_heldout_nrmse"]["value"]) >= 1
    assert (out / "recording.h5").exists()
    # the monitor's model followed the whole run and its panels were rendered offscreen
    monitor = summary["monitor"]
    assert monitor["mode"] == "snapshot" and monitor["snapshot"] == str(out / "monitor.png")
    assert "series " in monitor["status"] and "series –" not in monitor["status"]  # it saw the series
    # (whether it also saw end/1 depends on the lossy viewer path at 400× speed)
    pixels = png_pixels(out / "monitor.png")
    assert pixels.shape == (1000, 1600, 3)
    left = pixels[60:600, :680].astype(float)  # the slice panels: a bright particle on a dark ground
    assert left.max() > 200 and np.median(left) < 60


class FakeMonitor:
    """Stands in for the monitor process: records how it was launched and, like the real one,
    subscribes to the endpoints it was given (so the test sees that they carry the run's data)."""

    def __init__(self):
        self.calls = []
        self.pid = 4242
        self.model = self.receiver = None

    def poll(self):  # as Popen.poll: still running
        return None

    def __call__(self, recon_endpoint, frames_endpoint=None, **kw):
        from tiltstream.viz.model import ViewModel
        from tiltstream.viz.receiver import StreamReceiver

        self.calls.append((recon_endpoint, frames_endpoint, kw))
        self.model = ViewModel(recon_endpoint=recon_endpoint, frames_endpoint=frames_endpoint)
        self.receiver = StreamReceiver(self.model, recon_endpoint, frames_endpoint).start()
        return self


def test_demo_with_a_display_opens_the_monitor_on_the_live_streams(tmp_path, capsys, monkeypatch):
    fake = FakeMonitor()
    monkeypatch.setattr(viz_app, "display_available", lambda: True)
    monkeypatch.setattr(viz_app, "launch_monitor", fake)
    out = tmp_path / "demo"
    try:
        assert main([*TINY, "--out-dir", str(out)]) == 0
        deadline = time.monotonic() + 5
        while fake.model.status().frames_seen != 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = fake.model.status()
    finally:
        if fake.receiver is not None:
            fake.receiver.stop()
    text = capsys.readouterr().out
    assert len(fake.calls) == 1
    recon_ep, frames_ep, kw = fake.calls[0]
    assert f"monitors can subscribe to {recon_ep}" in text and "monitor window opened" in text
    assert kw["detach"] is True and frames_ep.startswith("tcp://127.0.0.1:")
    assert status.frames_seen == 40 and status.series_id is not None  # the service's results arrived
    assert fake.model.latest_frame() is not None and fake.model.view() is not None
    summary = json.loads((out / "summary.json").read_text())
    assert summary["monitor"] == {"mode": "window", "pid": 4242}
    assert summary["frames_recorded"] == 40 and not (out / "monitor.png").exists()


@pytest.mark.parametrize("display", [True, False])
def test_no_monitor_means_neither_window_nor_snapshot(display):
    assert demo.monitor_mode(no_monitor=True, display=display) is None
    assert demo.monitor_mode(no_monitor=False, display=display) == ("window" if display else "snapshot")


def test_display_detection(monkeypatch):
    monkeypatch.setattr(viz_app.sys, "platform", "linux")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.delenv("DISPLAY", raising=False)
    assert not viz_app.display_available()
    monkeypatch.setenv("DISPLAY", ":99")
    assert viz_app.display_available()
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")  # headless on purpose, even with a display
    assert not viz_app.display_available()


def test_no_monitor_flag_parses():
    assert build_parser().parse_args([*TINY, "--no-monitor"]).no_monitor
    assert not build_parser().parse_args(TINY).no_monitor


def test_demo_trains_the_dip_unless_told_not_to():
    assert not build_parser().parse_args(TINY).no_dip
    assert build_parser().parse_args([*TINY, "--no-dip"]).no_dip


def test_free_tcp_endpoint_can_be_bound():
    import zmq

    endpoint = demo.free_tcp_endpoint()
    assert endpoint.startswith("tcp://127.0.0.1:") and int(endpoint.rsplit(":", 1)[1]) > 0
    sock = zmq.Context.instance().socket(zmq.PUB)
    try:
        sock.bind(endpoint)
    finally:
        sock.close(0)


def test_a_failed_snapshot_is_reported_and_does_not_stop_the_demo(tmp_path, monkeypatch, caplog):
    class Receiver:
        def stop(self):
            pass

    def broken(model, path):
        raise OSError(f"could not write snapshot {path}")

    monkeypatch.setattr(viz_app, "render_snapshot", broken)
    monitor = demo._Monitor("snapshot", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", tmp_path)
    monitor.receiver = Receiver()
    info = monitor.finish()
    assert info["mode"] == "snapshot" and info["snapshot"] is None
    assert "could not write snapshot" in info["error"]
    assert any("monitor snapshot failed" in r.getMessage() for r in caplog.records)
