"""One set of frame rules (issue 12, finding 6): the wire, the publisher and the solvers agree."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from tiltstream.acquire.memory import MemorySink
from tiltstream.acquire.publisher import FramePublisher
from tiltstream.recon.streaming import StreamingSirt
from tiltstream.stream.protocol import ProtocolError, unpack
from tiltstream.stream.validation import ANGLE_LIMIT_DEG, FrameRejected, check_frame

FRAME = np.ones((4, 5), np.float32)
BAD = [
    (dict(angle_deg=1e9), "bad_value"),
    (dict(angle_deg=-180.5), "bad_value"),
    (dict(angle_deg=float("nan")), "non_finite"),
    (dict(t_s=float("inf")), "non_finite"),
    (dict(exposure_s=-1.0), "bad_value"),
    (dict(data=np.full((4, 5), np.nan, np.float32)), "non_finite"),
    # finite float64 pixels that become Inf in the float32 every solver computes in
    (dict(data=np.where(np.eye(4, 5) > 0, 1e300, 1.0)), "non_finite"),
    (dict(data=np.where(np.eye(4, 5) > 0, 1e39, 1.0)), "non_finite"),  # its square sum still finite in float64
]


def wire(data=FRAME, angle_deg=10.0, t_s=1.0, exposure_s=0.1) -> list[bytes]:
    header = {"type": "frame/1", "seq": 0, "stream_id": "s", "angle_deg": angle_deg, "t_s": t_s,
              "exposure_s": exposure_s, "shape": list(data.shape), "dtype": data.dtype.str}
    return [msgpack.packb(header), data.tobytes()]


@pytest.mark.parametrize(("change", "reason"), BAD)
def test_every_place_rejects_the_same_frames_with_the_same_reason(change, reason):
    kw = dict(data=FRAME, angle_deg=10.0, t_s=1.0, exposure_s=0.1) | change
    with pytest.raises(ProtocolError) as on_wire:
        unpack(wire(**kw))
    with pytest.raises(FrameRejected) as rule:
        check_frame(kw["data"], angle_deg=kw["angle_deg"], t_s=kw["t_s"], exposure_s=kw["exposure_s"])
    with FramePublisher(MemorySink(), frame_shape=(4, 5), dtype="float32") as pub:
        pub.start()
        with pytest.raises(FrameRejected) as published:
            pub.send_frame(kw["data"], angle_deg=kw["angle_deg"], t_s=kw["t_s"], exposure_s=kw["exposure_s"])
    assert on_wire.value.reason == rule.value.reason == published.value.reason == reason
    if "exposure_s" not in change:  # the solver takes no exposure
        est = StreamingSirt((5, 4, 5), device="cpu")
        with pytest.raises(FrameRejected) as solver:
            est.add_frame(kw["data"], kw["angle_deg"], kw["t_s"])
        assert solver.value.reason == reason and est.n_frames_seen == 0


def test_float64_frames_within_the_float32_range_pass_everywhere():
    data = np.where(np.eye(4, 5) > 0, 3e38, -1e-300)
    assert unpack(wire(data=data)).data.dtype == np.float64
    check_frame(data, angle_deg=0.0, t_s=0.0)
    StreamingSirt((5, 4, 5), device="cpu").add_frame(data, 0.0, 0.0)


def test_the_angle_limit_is_inclusive_everywhere():
    for angle in (-ANGLE_LIMIT_DEG, ANGLE_LIMIT_DEG):
        assert unpack(wire(angle_deg=angle)).angle_deg == angle
        StreamingSirt((5, 4, 5), device="cpu").add_frame(FRAME, angle, 0.0)
