"""The monitor's network side: a stalled GUI or viewer never stalls the publisher; late joiners and
several monitors; the real reconstruction service as the source."""

import threading
import time

import numpy as np
import pytest

from tiltstream.stream.garbage import send_garbage
from tiltstream.stream.messages import FrameMsg, MetricsMsg, SlicesMsg, StartMsg, VolumeMsg
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import Publisher, Subscriber
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
    """Send n slices (and a volume every 10), ``pause_s`` apart."""
    for seq in range(first, first + n):
        pub.send(slices(seq))
        if seq % 10 == 0:
            pub.send(volume(seq))
        if pause_s:
            time.sleep(pause_s)


def send_series(tx, s, pause_s=0.0):
    """start/1 and every frame of the simulated series ``s`` (no end/1), ``pause_s`` apart."""
    tx.send(StartMsg(stream_id=SID, frame_shape=s.frames.shape[1:], dtype="float32", scheme="golden",
                     pixel_nm=s.pixel_nm))
    for i in range(len(s)):
        tx.send(FrameMsg(seq=i, stream_id=SID, angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]),
                         exposure_s=0.1, data=s.frames[i]))
        if pause_s:
            time.sleep(pause_s)


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
                assert wait_for(lambda: pub.poll_subscriptions() or pub.new_subscribers, 10.0)
                sender = threading.Thread(target=publish_burst, args=(pub, 1, 300))
                sender.start()
                sender.join(30.0)  # meanwhile the GUI thread is stuck here: no events, no redraws
                # A publisher that waited for this viewer would never finish while the GUI is stuck.
                assert not sender.is_alive(), "the publisher could not finish while the GUI was stalled"
                # Like the service while idle: re-send the newest state until it is shown (the first
                # send may meet the end of the burst still queued for this viewer, and be dropped).
                deadline, next_send = time.monotonic() + 15.0, 0.0  # generous: the machine may be loaded
                while time.monotonic() < deadline and (window.shown_view is None or window.shown_view.seq != 1000):
                    if time.monotonic() >= next_send:
                        pub.send(slices(1000))
                        pub.send(volume(1000))
                        next_send = time.monotonic() + 0.2
                    app.processEvents()
                    time.sleep(0.01)
            assert window.shown_view.seq == 1000  # the newest, not a backlog of old ones
            assert model.n_history <= 4  # bounded while the GUI was away
            assert model.history[-1].seq == 1000
        finally:
            dispose(window)


def test_slow_viewer_drops_for_itself_only_and_counts_it():
    with Publisher(tcp_endpoint(0)) as pub:
        slow, fast = ViewModel(recon_endpoint=pub.endpoint), ViewModel(recon_endpoint=pub.endpoint)
        real_ingest = slow.ingest
        release = threading.Event()

        def stalled_ingest(msg, received_s=None):
            release.wait(30.0)  # a viewer stuck until the burst is out ...
            time.sleep(0.03)  # ... and then one that cannot keep up
            return real_ingest(msg, received_s)

        slow.ingest = stalled_ingest
        with StreamReceiver(slow, pub.endpoint), StreamReceiver(fast, pub.endpoint, rcvhwm=1000):
            assert wait_for(lambda: (pub.poll_subscriptions(), pub.new_subscribers)[1] >= 2, 10.0)
            sender = threading.Thread(target=publish_burst, args=(pub, 1, 200), kwargs={"pause_s": 0.003})
            sender.start()
            sender.join(30.0)
            # A publisher that waited for the stuck viewer would not have finished.
            assert not sender.is_alive(), "a stuck viewer stalled the publisher"
            release.set()
            # Like the service while idle: re-send the newest state until every viewer has it.
            seq, deadline = 201, time.monotonic() + 15.0  # generous: the machine may be loaded
            while time.monotonic() < deadline and not all(m.view() is not None and m.view().seq >= 201
                                                          for m in (slow, fast)):
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
    from tiltstream.stream.transport import FrameSender

    s = simulate_series(make_phantom("nanorod", size=20, static=True), n_frames=24, blur=False)
    cfg = EngineConfig(streaming=StreamingParams(window_frames=24, subset_size=8), device="cpu", volume_period_s=0.2)
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), cfg, resend_period_s=3600.0)
        stop = threading.Event()
        runner = threading.Thread(target=svc.run, args=(stop,), daemon=True)
        runner.start()
        early = ViewModel(recon_endpoint=svc.pub_endpoint)
        try:
            with StreamReceiver(early, svc.pub_endpoint):
                time.sleep(0.3)
                send_series(tx, s)
                assert wait_for(lambda: early.metrics().get("frames_seen") == len(s), 20.0)
                time.sleep(0.5)
                late = ViewModel(recon_endpoint=svc.pub_endpoint)
                with StreamReceiver(late, svc.pub_endpoint):
                    # No idle re-sends within this test (resend_period_s), so only the on-subscribe
                    # re-send can do this.
                    assert wait_for(lambda: late.n_history > 0 and late.view() is not None, 20.0)
            assert late.series_id == early.series_id == SID
            assert late.reference_shape == early.reference_shape == (20, 20, 20)
            np.testing.assert_allclose(late.history[-1].data, early.history[-1].data)
            assert late.status().frames_dropped == 0
        finally:
            stop.set()
            runner.join(10)
            svc.close()


def dip_burst(first_seq, n_frames, times, edge=48):
    """One DIP estimate as the service publishes it: a volume per time point, then its metrics."""
    out = [VolumeMsg(stream_id=SID, seq=first_seq + k, t_s=t, data=np.full((edge, edge, edge), t, np.float32),
                     source="dip", n_frames_used=n_frames) for k, t in enumerate(times)]
    out.append(MetricsMsg(stream_id=SID, seq=first_seq + len(times), t_s=times[-1],
                          values={"dip_frames": float(n_frames), "dip_heldout_nrmse": 0.2}))
    return out


def test_subscriber_recv_all_returns_every_queued_message_in_order_validated_and_bounded(rng):
    with Publisher(tcp_endpoint(0), sndhwm=64) as pub, Subscriber(pub.endpoint, rcvhwm=64) as sub:
        assert wait_for(lambda: pub.poll_subscriptions() or pub.new_subscribers, 10.0)
        assert sub.recv_all(timeout_ms=20) == []  # nothing queued: empty after the wait, no hang
        for seq in range(5):
            pub.send(volume(seq, edge=4))
            send_garbage(pub, rng, 2)
        assert wait_for(lambda: sub.socket.poll(0), 10.0)
        time.sleep(0.2)  # let all fifteen arrive
        first = sub.recv_all(timeout_ms=100, max_messages=6)  # six reads: four of them valid or fewer
        rest = sub.recv_all(timeout_ms=100)
        got = [m.seq for m in first + rest]
        assert got == [0, 1, 2, 3, 4]  # all, in order: nothing skipped for a newer one
        assert len(first) < 5 and sub.stats().rejected == 10 and sub.stats().skipped == 0
        with pytest.raises(ValueError, match="at least 1"):
            sub.recv_all(0, max_messages=0)


def test_receiver_gets_every_volume_of_a_dip_burst_even_while_the_model_is_slow():
    """A DIP estimate is a burst of volumes at several times: the monitor must get every one (a
    receiver that keeps only the newest would leave the DIP's time slider with one point)."""
    # The publisher must queue a whole burst per subscriber: with the viewer default (sndhwm=2)
    # ZeroMQ drops part of a burst before it leaves the publisher, whatever the monitor does.
    with Publisher(tcp_endpoint(0), sndhwm=32) as pub:
        model = ViewModel(recon_endpoint=pub.endpoint)
        real_ingest = model.ingest

        def busy_ingest(msg, received_s=None):
            time.sleep(0.005)  # the GUI thread holding the interpreter now and then
            return real_ingest(msg, received_s)

        model.ingest = busy_ingest
        with StreamReceiver(model, pub.endpoint):
            assert wait_for(lambda: pub.poll_subscriptions() or pub.new_subscribers, 10.0)
            times = [0.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0]
            for k, n_frames in enumerate((30, 45, 60)):
                scaled = [t * (k + 1) / 3 for t in times]
                for msg in dip_burst(100 * k, n_frames, scaled):
                    pub.send(msg)
                pub.send(slices(k + 1))  # the SIRT goes on in between
                time.sleep(0.05)
            assert wait_for(lambda: model.metrics().get("dip_frames") == 60, 15.0)
        assert [e.t_s for e in model.dip] == [t * 3 / 3 for t in times]
        assert {e.n_frames_used for e in model.dip} == {60}
        assert model.dip.estimates == 3 and model.status().dip_frames == 60
        model.set_source("dip")
        assert model.n_history == 8 and model.view().t_s == 56.0


@pytest.mark.timeout(90)
def test_real_service_with_online_dip_fills_the_dip_view_apart_from_the_sirt():
    from tiltstream.recon.dip import DipParams
    from tiltstream.recon.dip.online import OnlineDipConfig
    from tiltstream.recon.engine import EngineConfig
    from tiltstream.recon.service import ReconService
    from tiltstream.recon.streaming import StreamingParams
    from tiltstream.sim import make_phantom, simulate_series
    from tiltstream.stream.messages import EndMsg
    from tiltstream.stream.transport import FrameSender

    s = simulate_series(make_phantom("nanorod", size=20, static=True), n_frames=32, blur=False)
    cfg = EngineConfig(streaming=StreamingParams(window_frames=24, subset_size=8), device="cpu", volume_period_s=0.2)
    dip = OnlineDipConfig(params=DipParams(mlp_width=32, mlp_depth=2, decoder_width=16, batch_frames=4,
                                           heldout_fraction=0.0, device="cpu"),
                          min_frames=8, publish_period_s=0.3, n_times=3, device="cpu", nice=0)
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), cfg, dip=dip)
        stop = threading.Event()
        runner = threading.Thread(target=svc.run, args=(stop,), kwargs={"until_end": True}, daemon=True)
        runner.start()
        model = ViewModel(recon_endpoint=svc.pub_endpoint)
        try:
            with StreamReceiver(model, svc.pub_endpoint):
                time.sleep(0.3)
                send_series(tx, s, pause_s=0.03)
                assert wait_for(lambda: model.dip_available, 30.0), "no DIP volume reached the monitor"
                tx.send(EndMsg(stream_id=SID, n_frames=len(s), reason="done"))
                runner.join(30)
                time.sleep(0.3)
        finally:
            stop.set()
            runner.join(10)
            svc.close()
    assert all(e.source == "dip" and e.data.shape == (20, 20, 20) for e in model.dip)
    assert model.n_history > 0 and all(e.source == "sirt" for e in model.history)
    assert model.source == "sirt" and model.view().source == "sirt"
    model.set_source("dip")
    times = model.history_times()
    assert model.view().source == "dip" and model.view().t_s == times[-1] and np.all(np.diff(times) > 0)
    assert times[-1] <= s.times_s[-1] + 1e-6

