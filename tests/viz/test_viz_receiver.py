"""The monitor's network side: a stalled GUI or viewer never stalls the publisher; late joiners and
several monitors; the real reconstruction service as the source."""

import threading
import time

import numpy as np
import pytest

from tiltstream.stream.messages import SlicesMsg, VolumeMsg
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import Publisher
from tiltstream.viz import ModelConfig, StreamReceiver, ViewModel

SID = "feedc0de" * 4


def slices(seq, edge=96):
    vol = np.full((edge, edge, edge // 2), float(seq), np.float32)
    return SlicesMsg(stream_id=SID, seq=seq, t_s=0.1 * seq, xy=vol[0], xz=vol[:, 0, :], yz=vol[:, :, 0],
                     index=(0, 0, 0), source="sirt")


def volume(seq, edge=48):
    return VolumeMsg(stream_id=SID, seq=seq, t_s=0.1 * seq, data=np.full((edge, edge, edge), float(seq), np.float32),
                     source="sirt", n_frames_used=seq)


def wait_for(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def publish_burst(pub, first, n, pause_s=0.0):
    """Send n slices (and a volume every 10), ``pause_s`` apart; returns the wall time spent sending."""
    took = 0.0
    for seq in range(first, first + n):
        t0 = time.perf_counter()
        pub.send(slices(seq))
        if seq % 10 == 0:
            pub.send(volume(seq))
        took += time.perf_counter() - t0
        if pause_s:
            time.sleep(pause_s)
    return took


@pytest.fixture
def app():
    pytest.importorskip("pyqtgraph")
    from pyqtgraph.Qt import QtWidgets

    return QtWidgets.QApplication.instance() or QtWidgets.QApplication([])


def dispose(window):
    """Delete a window now, not during interpreter shutdown (where PySide may crash)."""
    from pyqtgraph.Qt import QtCore

    window.close()
    window.deleteLater()
    QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)


def test_stalled_gui_does_not_stall_the_publisher_and_shows_the_latest_after(app):
    from tiltstream.viz.window import MonitorWindow

    with Publisher(tcp_endpoint(0)) as pub:
        model = ViewModel(ModelConfig(history_volumes=4), recon_endpoint=pub.endpoint)
        window = MonitorWindow(model, display_hz=30)
        window.show()
        try:
            with StreamReceiver(model, pub.endpoint):
                assert wait_for(lambda: pub.poll_subscriptions() or pub.new_subscribers, 3.0)
                sent_s: list[float] = []
                sender = threading.Thread(target=lambda: sent_s.append(publish_burst(pub, 1, 300)))
                sender.start()
                time.sleep(3.0)  # the GUI thread is stuck: no events, no redraws
                finished_during_stall = not sender.is_alive()
                sender.join(10.0)
                # A publisher that waited for this viewer would still be stuck now.
                assert finished_during_stall, f"publisher still sending after the 3 s GUI stall ({sent_s})"
                pub.send(slices(1000))
                pub.send(volume(1000))
                deadline = time.monotonic() + 3.0
                while time.monotonic() < deadline and (window._last_view is None or window._last_view.seq != 1000):
                    app.processEvents()
                    time.sleep(0.01)
            assert window._last_view.seq == 1000  # the newest, not a backlog of old ones
            assert model.n_history <= 4  # bounded while the GUI was away
            assert model.history[-1].seq == 1000
        finally:
            dispose(window)


def test_slow_viewer_drops_for_itself_only_and_counts_it():
    with Publisher(tcp_endpoint(0)) as pub:
        slow, fast = ViewModel(recon_endpoint=pub.endpoint), ViewModel(recon_endpoint=pub.endpoint)
        real_ingest = slow.ingest

        def stalled_ingest(msg, received_s=None):
            time.sleep(0.03)  # a viewer that cannot keep up
            return real_ingest(msg, received_s)

        slow.ingest = stalled_ingest
        with StreamReceiver(slow, pub.endpoint), StreamReceiver(fast, pub.endpoint, rcvhwm=1000):
            assert wait_for(lambda: (pub.poll_subscriptions(), pub.new_subscribers)[1] >= 2, 3.0)
            took = publish_burst(pub, 1, 200, pause_s=0.003)  # ~300 updates/s; the slow viewer takes 33/s
            # Waiting for the slow viewer (30 ms per message) would take ≥ 6 s; not waiting takes well under 1 s.
            assert took < 3.0, f"publishing took {took:.2f} s: a slow viewer stalled it"
            # Like the service while idle: re-send the newest state until every viewer has it.
            seq = 201
            while seq < 240 and not all(m.view() is not None and m.view().seq >= 201 for m in (slow, fast)):
                pub.send(slices(seq))
                seq += 1
                time.sleep(0.1)
            assert fast.view().seq >= 201 and slow.view().seq >= 201
        fast_lost, slow_lost = fast.status().updates_dropped, slow.status().updates_dropped
        assert slow_lost > 40, slow_lost  # counted, not silent (it can take at most ~1 in 3 here)
        assert fast_lost <= slow_lost // 10, (fast_lost, slow_lost)  # the loss is the slow viewer's own


@pytest.mark.timeout(60)
def test_real_service_late_joiner_sees_state_at_once_and_two_monitors_agree():
    from tiltstream.recon.engine import EngineConfig
    from tiltstream.recon.service import ReconService
    from tiltstream.recon.streaming import StreamingParams
    from tiltstream.sim import make_phantom, simulate_series
    from tiltstream.stream.messages import FrameMsg, StartMsg
    from tiltstream.stream.transport import FrameSender

    s = simulate_series(make_phantom("nanorod", size=20, static=True), n_frames=24, blur=False)
    cfg = EngineConfig(streaming=StreamingParams(window_frames=24, subset_size=8), device="cpu", volume_period_s=0.2)
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), cfg, resend_period_s=30.0)
        stop = threading.Event()
        runner = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        runner.start()
        early = ViewModel(recon_endpoint=svc.pub_endpoint)
        try:
            with StreamReceiver(early, svc.pub_endpoint):
                time.sleep(0.3)
                tx.send(StartMsg(stream_id=SID, frame_shape=s.frames.shape[1:], dtype="float32", scheme="golden",
                                 pixel_nm=s.pixel_nm))
                for i in range(len(s)):
                    tx.send(FrameMsg(seq=i, stream_id=SID, angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]),
                                     exposure_s=0.1, data=s.frames[i]))
                assert wait_for(lambda: early.metrics().get("frames_seen") == len(s), 20.0)
                time.sleep(0.5)
                late = ViewModel(recon_endpoint=svc.pub_endpoint)
                t0 = time.monotonic()
                with StreamReceiver(late, svc.pub_endpoint):
                    # Idle re-sends are 30 s apart here, so only the on-subscribe re-send can do this.
                    assert wait_for(lambda: late.n_history > 0 and late.view() is not None, 3.0)
                    joined_s = time.monotonic() - t0
            assert joined_s < 3.0
            assert late.series_id == early.series_id == SID
            assert late.reference_shape == early.reference_shape == (20, 20, 20)
            np.testing.assert_allclose(late.history[-1].data, early.history[-1].data)
            assert late.status().frames_dropped == 0
        finally:
            stop.set()
            runner.join(10)
            svc.close()
