"""Fuzz over the header space, for every receiver: it keeps running and loses nothing valid.

Hypothesis draws message headers (known and unknown types, every field with values of every
msgpack type, huge and negative numbers, NaN/Inf, odd shapes and buffers) and interleaves them
with a real series. Invalid ones must be rejected and counted; valid ones from a foreign sender
(a second connection) must not end, replace or derail the real series; the real frames must all
arrive, in order, at the lossless receiver, the recorder and the reconstruction engine, and the
viewer's subscriber must deliver every real message.
"""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiltstream.recon.engine import EngineConfig, ReconEngine
from tiltstream.stream import read_series
from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, ProtocolError, StartMsg, pack, unpack
from tiltstream.stream.recorder import Recorder
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.transport import FrameReceiver, FrameSender, Publisher, Subscriber

Y, U, N = 6, 5, 6
_names = itertools.count()
TYPES = ["start/1", "frame/1", "end/1", "volume/1", "slices/1", "metrics/1", "frame/2", "frame", "junk/1", "", 7]
FIELDS = ["seq", "stream_id", "angle_deg", "t_s", "exposure_s", "shape", "dtype", "frame_shape", "scheme",
          "n_frames", "reason", "data", "values", "index", "xy_shape", "source", "experiment", "pixel_nm"]

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8), st.binary(max_size=8),
    st.sampled_from(["real", "<f4", "float32", "|u1", "golden_ratio"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                           max_size=3), max_leaves=6)
headers = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={name: (st.lists(st.integers(-3, 2**31), min_size=0, max_size=3) if "shape" in name else values)
              for name in FIELDS},
)
messages = st.tuples(headers, st.lists(st.binary(max_size=64), max_size=3))

# Well-formed messages a hostile or confused peer may send: any series id (the real one too), any seq,
# start/1 of absurd (but protocol-legal) frame sizes, end/1 of any count.
ids = st.sampled_from(["real", "evil", "x" * 32])
seqs = st.integers(0, 2**63 - 1)
hostile = st.one_of(
    st.builds(lambda sid, y, u: StartMsg(stream_id=sid, frame_shape=(y, u), dtype="uint16", scheme="golden"),
              ids, st.integers(1, 8192), st.integers(1, 8192)),
    st.builds(lambda sid, seq, a: FrameMsg(seq=seq, stream_id=sid, angle_deg=a, t_s=1.0, exposure_s=0.1,
                                           data=np.zeros((Y, U), np.float32)), ids, seqs,
              st.floats(-180, 180)),
    st.builds(lambda sid, n: EndMsg(stream_id=sid, n_frames=n, reason="complete"), ids, seqs),
)


def encode(header: dict, buffers: list[bytes]) -> list[bytes]:
    return [msgpack.packb(header, use_bin_type=True), *buffers]


def is_valid(parts: list[bytes]) -> bool:
    try:
        unpack(parts)
    except ProtocolError:
        return False
    return True


def real_series() -> list:
    out = [StartMsg(stream_id="real", frame_shape=(Y, U), dtype="float32", scheme="golden_ratio")]
    out += [FrameMsg(seq=i, stream_id="real", angle_deg=float(10 * i - 30), t_s=0.5 * i, exposure_s=0.1,
                     data=np.full((Y, U), i + 1, np.float32)) for i in range(N)]
    return out + [EndMsg(stream_id="real", n_frames=N, reason="complete")]


def received(rx: FrameReceiver, n: int, timeout_s: float = 5.0) -> list:
    out, deadline = [], time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        msg = rx.recv(timeout_ms=200)
        if msg is not None:
            out.append(msg)
    return out


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])


@FUZZ
@given(junk=st.lists(messages, min_size=1, max_size=12), forged=st.lists(hostile, max_size=6), where=st.lists(st.integers(0, N), min_size=12,
                                                                          max_size=12))
def test_lossless_receiver_recorder_and_engine_survive_any_header(tmp_path_factory, junk, forged, where) -> None:
    bad = [encode(h, b) for h, b in junk]
    foreign = [parts for parts in bad if is_valid(parts)] + [pack(m) for m in forged]  # from another peer
    invalid = [parts for parts in bad if not is_valid(parts)]
    path = tmp_path_factory.mktemp("fuzz") / "rec.h5"
    with Recorder(tcp_endpoint(0), path, bind=True) as rec, FrameReceiver(tcp_endpoint(0), bind=True,
                                                                          require_start=True) as rx:
        engine = ReconEngine(EngineConfig(device="cpu", memory_budget_bytes=256 * 2**20))
        with FrameSender(rec.endpoint, bind=False) as owner, FrameSender(rx.endpoint, bind=False) as owner2, \
                FrameSender(rec.endpoint, bind=False) as other, FrameSender(rx.endpoint, bind=False) as other2:
            series = real_series()
            got = []
            for k, msg in enumerate(series):
                assert owner.send(msg) and owner2.send(msg)
                if k == 1:  # once the series has an owner (its start/1 arrived), the foreign peer's follow
                    got = received(rx, 2)
                    for _ in range(2):
                        rec.handle(rec.receiver.recv(timeout_ms=5000))
                    for parts in foreign:
                        assert other.send_raw(parts) and other2.send_raw(parts)
                for parts, at in zip(invalid, where):
                    if at == k:  # invalid ones from the owner's own connection
                        assert owner.send_raw(parts) and owner2.send_raw(parts)
            got += received(rx, len(series) - len(got))
            for msg in got:
                engine.handle(msg)
                engine.step()
            rec.run(until_end=True, idle_timeout_s=5)
        stats, rx_stats = rec.stats, rx.stats()
    assert [(m.type_string, getattr(m, "seq", None)) for m in got] == \
        [(m.type_string, getattr(m, "seq", None)) for m in series]
    assert rx_stats.rejected >= len(invalid) and stats.missing == 0
    assert [(f.path.name, f.frames) for f in stats.files] == [("rec.h5", N)]
    assert read_series(path).frames[:, 0, 0].tolist() == [float(i + 1) for i in range(N)]
    assert engine.stream_id == "real" and engine.estimator.n_frames_seen == N


@FUZZ
@given(junk=st.lists(messages, min_size=1, max_size=12))
def test_viewer_subscriber_survives_any_header(junk) -> None:
    invalid = [parts for parts in (encode(h, b) for h, b in junk) if not is_valid(parts)]
    real = [MetricsMsg(stream_id="real", seq=i, t_s=float(i), values={"x": float(i)}) for i in range(N)]
    with Publisher(tcp_endpoint(0), sndhwm=1000) as pub, Subscriber(pub.endpoint, rcvhwm=1000) as sub:
        deadline = time.monotonic() + 5
        while not pub.poll_subscriptions() and time.monotonic() < deadline:
            time.sleep(0.01)
        for i, msg in enumerate(real):  # junk first: once the last real one is in, so is all junk
            for parts in invalid[i::N]:
                pub.send_raw(parts)
            assert pub.send(msg)
        got, deadline = [], time.monotonic() + 5
        while len(got) < N and time.monotonic() < deadline:
            got += sub.recv_all(timeout_ms=100)
        stats = sub.stats()
    assert [m.seq for m in got] == list(range(N))
    assert stats.rejected == len(invalid) and stats.missing == 0
