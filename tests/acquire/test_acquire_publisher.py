"""FramePublisher: the messages of a series, validation before sending, sinks and backpressure."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tiltstream.acquire import DeliveryTimeout, FramePublisher, MemorySink
from tiltstream.stream.messages import EndMsg, FrameMsg, StartMsg

SHAPE = (37, 31)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _frame(rng: np.random.Generator, dtype=np.float32, shape=SHAPE) -> np.ndarray:
    return (rng.random(shape) * 1000).astype(dtype)


def test_series_messages_in_order(rng):
    sink = MemorySink()
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32, pixel_nm=0.31, scheme="golden",
                         tilt_range_deg=(-60, 65), experiment={"sample": "Au rods"})
    stream_id = pub.start(operator="tester", heating={"ramp_C_per_s": 0.5})
    frames = [_frame(rng) for _ in range(3)]
    seqs = [pub.send_frame(f, angle_deg=-60 + 10 * i, t_s=1.5 * i, exposure_s=0.1, dose_e_per_A2=20.0 * (i + 1),
                           temperature_C=25 + i, stage_xyz=(1.0, 2.0, 3.0), focus_index=i)
            for i, f in enumerate(frames)]
    assert pub.end() == 3
    assert seqs == [0, 1, 2]
    msgs = sink.messages
    assert [type(m) for m in msgs] == [StartMsg, FrameMsg, FrameMsg, FrameMsg, EndMsg]
    start, *sent, end = msgs
    assert len(stream_id) == 32 and int(stream_id, 16) >= 0
    assert start.stream_id == stream_id and start.frame_shape == SHAPE and start.dtype == "<f4"
    assert start.pixel_nm == 0.31 and start.scheme == "golden" and start.tilt_range_deg == (-60.0, 65.0)
    assert start.experiment == {"sample": "Au rods", "operator": "tester", "heating": {"ramp_C_per_s": 0.5}}
    for i, (msg, data) in enumerate(zip(sent, frames, strict=True)):
        assert msg.stream_id == stream_id and msg.seq == i
        np.testing.assert_array_equal(msg.data, data)
        assert (msg.angle_deg, msg.t_s, msg.exposure_s) == (-60 + 10 * i, 1.5 * i, 0.1)
        assert (msg.dose_e_per_A2, msg.temperature_C, msg.focus_index) == (20.0 * (i + 1), 25 + i, i)
        assert msg.stage_xyz == (1.0, 2.0, 3.0)
    assert end == EndMsg(stream_id=stream_id, n_frames=3, reason="complete")


def test_restart_gives_new_stream_id_and_seq_from_zero(rng):
    sink = MemorySink()
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32, exposure_s=0.2)
    first = pub.start()
    pub.send_frame(_frame(rng), angle_deg=0.0, t_s=0.0)
    pub.send_frame(_frame(rng), angle_deg=1.0, t_s=1.0)
    pub.end()
    second = pub.start()
    assert pub.send_frame(_frame(rng), angle_deg=2.0, t_s=0.0) == 0
    pub.end("aborted")
    assert first != second
    ids = [(type(m).__name__, m.stream_id) for m in sink.messages]
    assert ids == [("StartMsg", first), ("FrameMsg", first), ("FrameMsg", first), ("EndMsg", first),
                   ("StartMsg", second), ("FrameMsg", second), ("EndMsg", second)]
    assert sink.ends[1].reason == "aborted" and sink.ends[1].n_frames == 1
    assert sink.frames[-1].exposure_s == 0.2


def test_default_time_is_seconds_since_start_on_the_given_clock(rng):
    clock = FakeClock()
    sink = MemorySink()
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1, clock=clock)
    pub.start()
    clock.now += 2.25
    pub.send_frame(_frame(rng), angle_deg=3.0)
    clock.now += 1.5
    pub.send_frame(_frame(rng), angle_deg=4.0)
    assert [f.t_s for f in sink.frames] == [2.25, 3.75]


def test_start_waits_for_the_first_frame_when_shape_or_dtype_unknown(rng):
    sink = MemorySink()
    with FramePublisher(sink, exposure_s=0.1) as pub:
        pub.start(note="deferred")
        assert sink.messages == []
        data = _frame(rng, np.uint16)
        pub.send_frame(data, angle_deg=5.0, t_s=0.0)
        pub.send_frame(data.astype(np.uint8), angle_deg=6.0, t_s=1.0)  # uint8 converts exactly to uint16
    start, f0, f1, end = sink.messages
    assert start.frame_shape == SHAPE and start.dtype == "<u2" and start.experiment == {"note": "deferred"}
    assert f0.data.dtype == np.uint16 and f1.data.dtype == np.uint16
    assert end.n_frames == 2 and end.reason == "complete"


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(array=np.zeros((2, 37, 31), np.float32)), "2-D"),
        (dict(array=np.zeros((0, 31), np.float32)), "non-empty 2-D"),
        (dict(array=np.zeros((31, 37), np.float32)), r"expected shape \(37, 31\)"),
        (dict(array=np.full(SHAPE, np.nan, np.float32)), "finite pixel"),
        (dict(array=np.zeros(SHAPE, np.float64)), "does not convert exactly"),
        (dict(angle_deg=float("nan")), "angle_deg: expected a finite"),
        (dict(angle_deg="north"), "angle_deg: expected a number"),
        (dict(t_s=float("inf")), "t_s: expected a finite"),
        (dict(exposure_s=-0.1), "exposure_s: expected >= 0"),
        (dict(exposure_s=None), "exposure_s: expected seconds"),
        (dict(dose_e_per_A2=-1.0), "dose_e_per_A2"),
        (dict(temperature_C=-300.0), "temperature_C"),
    ],
)
def test_invalid_frames_are_refused_before_anything_is_sent(rng, change, match):
    sink = MemorySink()
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32)
    pub.start()
    good = dict(array=_frame(rng), angle_deg=10.0, t_s=1.0, exposure_s=0.1)
    pub.send_frame(**good)
    before = len(sink)
    with pytest.raises(ValueError, match=match):
        pub.send_frame(**{**good, **change})
    assert len(sink) == before
    assert pub.send_frame(**good) == 1  # the failed frame took no seq


def test_shape_of_the_first_frame_is_enforced(rng):
    pub = FramePublisher(MemorySink(), exposure_s=0.1)
    pub.start()
    pub.send_frame(_frame(rng), angle_deg=0.0)
    with pytest.raises(ValueError, match=r"frame 1: data: expected shape \(37, 31\).*got \(37, 30\)"):
        pub.send_frame(_frame(rng, shape=(37, 30)), angle_deg=1.0)


def test_misuse_is_reported(rng):
    pub = FramePublisher(MemorySink(), frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1)
    with pytest.raises(RuntimeError, match="call start"):
        pub.send_frame(_frame(rng), angle_deg=0.0)
    with pytest.raises(RuntimeError, match="call start"):
        pub.end()
    pub.start()
    with pytest.raises(RuntimeError, match="still open"):
        pub.start()
    with pytest.raises(TypeError, match="unexpected field.*'gain'"):
        pub.send_frame(_frame(rng), angle_deg=0.0, gain=2)
    with pytest.raises(ValueError, match="frame_shape"):
        FramePublisher(MemorySink(), frame_shape=(0, 5))
    with pytest.raises(ValueError, match="int64"):
        FramePublisher(MemorySink(), dtype=np.int64)
    with pytest.raises(ValueError, match="lo < hi"):
        FramePublisher(MemorySink(), tilt_range_deg=(10, -10))


def test_context_manager_ends_the_series_with_the_error(rng):
    sink = MemorySink()
    with pytest.raises(ZeroDivisionError), FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32,
                                                          exposure_s=0.1) as pub:
        pub.start()
        pub.send_frame(_frame(rng), angle_deg=0.0)
        raise ZeroDivisionError("on purpose")
    assert sink.ends[0].n_frames == 1 and sink.ends[0].reason.startswith("error: ZeroDivisionError")


def test_backpressure_from_a_full_sink_delays_but_never_drops(rng):
    sink = MemorySink(maxsize=2, timeout_s=0.02)
    received: list = []

    def slow_consumer() -> None:
        while True:
            msg = sink.get(timeout_s=2.0)
            if msg is None:
                return
            received.append(msg)
            if isinstance(msg, EndMsg):
                return
            time.sleep(0.03)

    worker = threading.Thread(target=slow_consumer)
    worker.start()
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1)
    pub.start()
    for i in range(8):
        pub.send_frame(_frame(rng), angle_deg=float(i), t_s=float(i))
    pub.end()
    worker.join(timeout=5)
    assert [m.seq for m in received if isinstance(m, FrameMsg)] == list(range(8))
    assert isinstance(received[-1], EndMsg)
    assert sink.refused > 0 and pub.delivery.waits > 0  # the sink did push back


def test_fan_out_lossless_sinks_get_everything_lossy_ones_drop(rng):
    a, b = MemorySink(), MemorySink()
    viewer = MemorySink(maxsize=1, timeout_s=0.0)
    pub = FramePublisher([a, b], pub=viewer, frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1)
    pub.start()
    for i in range(4):
        pub.send_frame(_frame(rng), angle_deg=float(i))
    pub.end()
    assert a.messages == b.messages and len(a) == 6
    assert len(viewer) == 1 and viewer.refused == 5  # never waited for: drops only
    assert pub.delivery.dropped == [0, 0, 5]


def test_send_timeout_raises_when_a_lossless_sink_stays_full(rng):
    sink = MemorySink(maxsize=1, timeout_s=0.01)
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1, send_timeout_s=0.1)
    pub.start()  # fills the sink
    with pytest.raises(DeliveryTimeout, match="frame/1 .* seq 0"):
        pub.send_frame(_frame(rng), angle_deg=0.0)


def test_stop_event_ends_a_wait_for_a_full_sink(rng):
    stop = threading.Event()
    sink = MemorySink(maxsize=1, timeout_s=0.01)
    pub = FramePublisher(sink, frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1, stop_event=stop)
    pub.start()
    sender = threading.Thread(target=pub.send_frame, args=(_frame(rng),), kwargs={"angle_deg": 0.0})
    sender.start()
    sender.join(0.2)
    assert sender.is_alive()  # the sink is full: it waits (no send timeout here) ...
    stop.set()
    sender.join(10.0)
    assert not sender.is_alive()  # ... until the stop event ends the wait
    assert len(sink) == 1  # only start/1


def test_endpoint_string_sends_over_the_transport(rng):
    transport = pytest.importorskip("tiltstream.stream.transport")
    data = _frame(rng)
    with FramePublisher("tcp://127.0.0.1:0", frame_shape=SHAPE, dtype=np.float32, exposure_s=0.1) as pub:
        sender = pub.delivery.sinks[0]
        assert isinstance(sender, transport.FrameSender)
        with transport.FrameReceiver(sender.endpoint) as receiver:
            pub.start(run=1)
            pub.send_frame(data, angle_deg=12.5, t_s=0.5)
            pub.end()
            got = [receiver.recv(timeout_ms=5000) for _ in range(3)]
    assert [type(m) for m in got] == [StartMsg, FrameMsg, EndMsg]
    np.testing.assert_array_equal(got[1].data, data)
    assert got[1].angle_deg == 12.5 and got[0].experiment == {"run": 1}
    assert sender.closed
