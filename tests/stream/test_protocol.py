"""Tests of the wire protocol codec: round trips, zero copy, hostile input, seq tracking."""

from __future__ import annotations

import collections
import dataclasses
import logging
import math
import threading
import warnings
from collections.abc import Callable
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from tiltstream.stream import messages, schema
from tiltstream.stream.protocol import (
    ALLOWED_DTYPES,
    DEFAULT_LIMITS,
    REASONS,
    ZERO_COPY_MIN_BYTES,
    EndMsg,
    FrameMsg,
    Limits,
    MetricsMsg,
    ProtocolError,
    RejectCounter,
    SeqNumbers,
    SeqStatus,
    SeqTracker,
    SlicesMsg,
    StartMsg,
    VolumeMsg,
    pack,
    sequence_key,
    try_unpack,
    unpack,
)
from tiltstream.stream.validation import validate_frame_fast, validate_header

N_HOSTILE = 1500
STREAM = "3f2a9c1e0b7d4e5f8a6b1c2d3e4f5a6b"


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return rng.standard_normal(shape).astype(dtype)


def make_start(rng: np.random.Generator) -> StartMsg:
    return StartMsg(
        stream_id=STREAM,
        frame_shape=(13, 17),
        dtype="uint16",
        scheme="golden_ratio",
        pixel_nm=0.25,
        tilt_range_deg=(-70.0, 70.0),
        experiment={
            "sample": "Au nanorod",
            "ramp_C_per_min": 5.0,
            "tags": ["in-situ", 1, None, True],
            "nested": {"a": [1.5, {"b": "c"}]},
        },
    )


def make_frame(
    rng: np.random.Generator,
    *,
    dtype: Any = np.uint16,
    shape: tuple[int, int] = (13, 17),
    full: bool = True,
) -> FrameMsg:
    extra = (
        dict(
            dose_e_per_A2=1.5,
            temperature_C=350.0,
            pixel_nm=0.25,
            tilt_range_deg=(-70.0, 70.0),
            stage_xyz=(1.0, -2.0, 3.5),
            focus_index=2,
        )
        if full
        else {}
    )
    return FrameMsg(
        seq=7,
        stream_id=STREAM,
        angle_deg=-37.5,
        t_s=12.25,
        exposure_s=0.05,
        data=random_array(rng, shape, dtype),
        **extra,
    )


def make_end(rng: np.random.Generator) -> EndMsg:
    return EndMsg(stream_id=STREAM, n_frames=144, reason="complete")


def make_volume(rng: np.random.Generator) -> VolumeMsg:
    return VolumeMsg(
        stream_id=STREAM,
        seq=3,
        t_s=20.5,
        data=random_array(rng, (5, 13, 17), np.float32),
        source="sirt",
        n_frames_used=40,
        voxel_nm=0.5,
    )


def make_slices(rng: np.random.Generator) -> SlicesMsg:
    return SlicesMsg(
        stream_id=STREAM,
        seq=4,
        t_s=21.0,
        xy=random_array(rng, (13, 17), np.float32),
        xz=random_array(rng, (5, 17), np.float32),
        yz=random_array(rng, (5, 13), np.float32),
        index=(2, 6, 9),
        source="dip",
        voxel_nm=0.5,
    )


def make_metrics(rng: np.random.Generator) -> MetricsMsg:
    return MetricsMsg(
        stream_id=STREAM, seq=5, t_s=21.5, values={"loss": 0.125, "fps": 30.0, "rejects": 3}
    )


MAKERS: dict[str, Callable[[np.random.Generator], Any]] = {
    "start": make_start,
    "frame": make_frame,
    "end": make_end,
    "volume": make_volume,
    "slices": make_slices,
    "metrics": make_metrics,
}
ARRAY_FIELDS = {"frame": ["data"], "volume": ["data"], "slices": ["xy", "xz", "yz"]}


# ------------------------------------------------------------------------------------------------
# Round trips.


def test_makers_cover_every_message_type() -> None:
    assert set(MAKERS) == set(messages.MESSAGE_TYPES)


def test_schema_covers_every_dataclass_field() -> None:
    for name, versions in messages.MESSAGE_TYPES.items():
        for cls in versions.values():
            header_fields = set(schema._FIELD_KINDS[name])
            array_fields = {a[0] for a in schema._ARRAYS[name]}
            assert header_fields.isdisjoint(array_fields)
            assert {f.name for f in dataclasses.fields(cls)} == header_fields | array_fields


@pytest.mark.parametrize("name", sorted(MAKERS))
def test_round_trip_every_type(name: str, rng: np.random.Generator) -> None:
    msg = MAKERS[name](rng)
    parts = pack(msg)
    assert len(parts) == 1 + len(ARRAY_FIELDS.get(name, []))
    out = unpack(parts)
    assert type(out) is type(msg)
    assert out == msg
    assert out.type_string == f"{name}/1"
    assert msgpack.unpackb(parts[0])["type"] == f"{name}/1"
    for field in ARRAY_FIELDS.get(name, []):
        got, sent = getattr(out, field), getattr(msg, field)
        assert got.shape == sent.shape and got.dtype == sent.dtype
        np.testing.assert_array_equal(got, sent)
        assert not got.flags.writeable


@pytest.mark.parametrize("dtype", [d.name for d in ALLOWED_DTYPES])
@pytest.mark.parametrize("shape", [(13, 17), (1, 1), (37, 31), (2, 255)])
def test_frame_round_trip_dtypes_and_odd_shapes(
    dtype: str, shape: tuple[int, int], rng: np.random.Generator
) -> None:
    msg = make_frame(rng, dtype=dtype, shape=shape, full=False)
    out = unpack(pack(msg))
    assert out == msg
    assert out.data.shape == shape
    assert out.data.dtype == np.dtype(dtype)
    assert out.dose_e_per_A2 is None and out.stage_xyz is None


def test_start_defaults_and_dtype_spelling_round_trip(rng: np.random.Generator) -> None:
    msg = StartMsg(stream_id=STREAM, frame_shape=[13, 17], dtype=np.float32, scheme="sequential")
    assert msg.dtype == "<f4" and msg.frame_shape == (13, 17)
    out = unpack(pack(msg))
    assert out == msg
    assert out.units == messages.DEFAULT_UNITS and out.experiment == {}
    assert out.pixel_nm is None and out.tilt_range_deg is None


@pytest.mark.parametrize("kind", ["zmq.Frame", "bytes", "bytearray", "memoryview", "tuple"])
def test_unpack_accepts_every_buffer_kind(kind: str, rng: np.random.Generator) -> None:
    msg = make_slices(rng)
    parts = pack(msg)
    convert = {
        "zmq.Frame": lambda p: [zmq.Frame(bytes(x)) for x in p],
        "bytes": lambda p: [bytes(x) for x in p],
        "bytearray": lambda p: [bytearray(x) for x in p],
        "memoryview": lambda p: [memoryview(bytes(x)) for x in p],
        "tuple": lambda p: tuple(bytes(x) for x in p),
    }[kind]
    assert unpack(convert(parts)) == msg


def test_big_endian_and_strided_input_is_sent_little_endian(rng: np.random.Generator) -> None:
    data = random_array(rng, (13, 34), np.uint16)
    msg = FrameMsg(
        seq=0,
        stream_id=STREAM,
        angle_deg=0,
        t_s=0,
        exposure_s=0,
        data=data.astype(">u2")[:, ::2],
    )
    parts = pack(msg)
    assert msgpack.unpackb(parts[0])["dtype"] == "<u2"
    out = unpack(parts)
    assert out.data.dtype == np.dtype("<u2")
    np.testing.assert_array_equal(out.data, data[:, ::2])


def test_equality_notices_every_difference(rng: np.random.Generator) -> None:
    msg = make_frame(rng)
    changed_pixel = msg.data.copy()
    changed_pixel[12, 16] ^= 1
    variants = [
        dataclasses.replace(msg, data=changed_pixel),
        dataclasses.replace(msg, data=msg.data.astype(np.int32)),
        dataclasses.replace(msg, data=np.ascontiguousarray(msg.data.T)),
        dataclasses.replace(msg, angle_deg=msg.angle_deg + 1e-9),
        dataclasses.replace(msg, focus_index=None),
        dataclasses.replace(msg, stream_id="other"),
    ]
    for variant in variants:
        assert variant != msg
        assert unpack(pack(variant)) != msg
    assert dataclasses.replace(msg) == msg
    assert msg != make_end(rng)


def test_nan_pixels_compare_equal_to_themselves() -> None:
    data = np.full((3, 5), np.nan, np.float32)
    msg = FrameMsg(seq=0, stream_id="a", angle_deg=0, t_s=0, exposure_s=0, data=data)
    assert msg == dataclasses.replace(msg, data=data.copy())


# ------------------------------------------------------------------------------------------------
# Zero copy and read-only views.


def test_large_frames_are_packed_zero_copy(rng: np.random.Generator) -> None:
    data = random_array(rng, (256, 256), np.float32)  # 256 KiB
    msg = FrameMsg(seq=0, stream_id="a", angle_deg=1.0, t_s=0.5, exposure_s=0.1, data=data)
    parts = pack(msg)
    assert isinstance(parts[1], memoryview)
    assert np.shares_memory(np.frombuffer(parts[1], np.uint8), data)
    assert np.shares_memory(unpack(parts).data, data)


def test_zero_copy_threshold_and_copies(rng: np.random.Generator) -> None:
    n = ZERO_COPY_MIN_BYTES // 2  # uint16 elements
    at = random_array(rng, (1, n), np.uint16)
    below = random_array(rng, (1, n - 1), np.uint16)
    strided = random_array(rng, (256, 512), np.uint16)[:, ::2]
    for data, zero_copy, kind in [
        (at, True, memoryview),
        (below, False, bytes),
        (strided, False, memoryview),
    ]:  # a private contiguous copy
        msg = FrameMsg(seq=0, stream_id="a", angle_deg=0, t_s=0, exposure_s=0, data=data)
        part = pack(msg)[1]
        assert isinstance(part, kind)
        assert np.shares_memory(np.frombuffer(part, np.uint8), data) is zero_copy
        assert unpack(pack(msg)) == msg


def test_unpacked_arrays_are_read_only_views_of_the_buffer(rng: np.random.Generator) -> None:
    parts = pack(make_frame(rng))
    received = bytearray(parts[1])
    out = unpack([parts[0], received])
    assert np.shares_memory(out.data, np.frombuffer(received, np.uint8))
    assert not out.data.flags.writeable
    with pytest.raises(ValueError):
        out.data[0, 0] = 1


# ------------------------------------------------------------------------------------------------
# pack refuses what unpack would reject.


def _frame(**changes: Any) -> FrameMsg:
    base = dict(seq=0, stream_id="a", angle_deg=0.0, t_s=0.0, exposure_s=0.0)
    return FrameMsg(**{**base, "data": np.zeros((3, 5), np.uint16), **changes})


def _start(**changes: Any) -> StartMsg:
    return StartMsg(
        **{**dict(stream_id="a", frame_shape=(3, 5), dtype="u2", scheme="x"), **changes}
    )


def _slices(**changes: Any) -> SlicesMsg:
    base = dict(stream_id="a", seq=0, t_s=0.0, index=(0, 0, 0), source="sirt")
    xy, xz, yz = (np.zeros(s, np.float32) for s in [(3, 5), (2, 5), (2, 3)])
    return SlicesMsg(**{**base, "xy": xy, "xz": xz, "yz": yz, **changes})


def test_nan_pixels_checked_by_the_receiver_and_by_pack_on_request() -> None:
    bad = _frame(data=np.full((3, 5), np.nan, np.float32))
    parts = pack(bad)  # the sender skips the full-frame scan by default...
    with pytest.raises(ProtocolError) as info:
        unpack(parts)  # ...because every receiver does it
    assert info.value.reason == "non_finite"
    with pytest.raises(ProtocolError) as info:
        pack(bad, check_data=True)
    assert info.value.reason == "non_finite"


@pytest.mark.parametrize(
    "msg, reason",
    [
        (_frame(angle_deg=math.nan), "non_finite"),
        (_frame(t_s=math.inf), "non_finite"),
        (_frame(seq=-1), "bad_value"),
        (_frame(seq=True), "bad_field_type"),
        (_frame(stream_id=""), "bad_value"),
        (_frame(angle_deg="1.0"), "bad_field_type"),
        (_frame(exposure_s=-0.1), "bad_value"),
        (_frame(tilt_range_deg=(70, -70)), "bad_value"),
        (_frame(data=np.zeros((3, 5, 2), np.uint16)), "bad_shape"),
        (_frame(data=np.zeros((0, 5), np.uint16)), "bad_shape"),
        (_frame(data=np.zeros((3, 5), object)), "bad_dtype"),
        (_frame(data=np.zeros((3, 5), np.float16)), "bad_dtype"),
        (_frame(data=np.zeros((3, 5), np.int64)), "bad_dtype"),
        (_frame(data=np.zeros((3, 5), np.complex64)), "bad_dtype"),
        (_frame(data=[[1, 2], [3, 4]]), "bad_field_type"),
        (_start(dtype=">u2"), "bad_dtype"),
        (_start(experiment={"s": {1, 2}}), "bad_field_type"),
        (_start(experiment={"big": "x" * 70_000}), "too_large"),
        (_start(pixel_nm=1e307), "bad_value"),  # finite, but a volume's voxel size (× binning) would overflow
        (_start(pixel_nm=0.0), "bad_value"),
        (_frame(pixel_nm=2e6), "bad_value"),
        (_slices(voxel_nm=1e10), "bad_value"),
        (MetricsMsg(stream_id="a", seq=0, t_s=0, values={"loss": math.nan}), "non_finite"),
        (_slices(xz=np.zeros((2, 5), np.float64)), "bad_dtype"),
        (_slices(yz=np.zeros((2, 4), np.float32)), "bad_shape"),
        (_slices(index=(2, 0, 0)), "bad_value"),
    ],
)
def test_pack_rejects_invalid_messages(msg: Any, reason: str) -> None:
    with pytest.raises(ProtocolError) as info:
        pack(msg)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_pack_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        pack({"type": "frame/1"})  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Hostile input.

Case = tuple[Any, "str | None", str]  # parts, expected reason (None: any), description


class Hostile:
    """Builds malformed messages from valid ones, one mutation each, with a seeded generator."""

    DTYPES_BAD = [
        ">u2",
        ">f4",
        "float16",
        "<f2",
        "int64",
        "<i8",
        "uint64",
        "object",
        "O",
        "|O",
        "U10",
        "<U4",
        "S5",
        "complex64",
        "<c8",
        "bool",
        "|b1",
        "",
        "uint16 ",
        "UINT16",
        "f4",
        "u2",
        "np.uint16",
        "<u2\x00",
        "V8",
    ]
    TYPES_UNKNOWN = ["foo/1", "FRAME/1", "", "/1", "frame1", " frame/1", "volumes/1", "\x00"]
    VERSIONS_BAD = ["/2", "/0", "", "/", "/1/2", "/x", "/-1", "/\u0661", "/1.0", "/ 1", "/99999"]
    VERSIONS_BAD += ["/" + "1" * 5000]  # int() of > 4300 digits raises ValueError

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        frame = make_frame(rng, dtype=np.float32)
        self.valid = {name: pack(make(rng)) for name, make in MAKERS.items()}
        self.valid["frame"] = pack(frame)
        self.headers = {n: msgpack.unpackb(p[0]) for n, p in self.valid.items()}
        self.buffers = {n: [bytes(b) for b in p[1:]] for n, p in self.valid.items()}

    def pick(self, seq: list[Any]) -> Any:
        return seq[int(self.rng.integers(len(seq)))]

    def name(self, arrays: bool = False) -> str:
        return self.pick(sorted(ARRAY_FIELDS) if arrays else sorted(MAKERS))

    def with_header(self, name: str, **changes: Any) -> list[Any]:
        header = dict(self.headers[name], **changes)
        return [msgpack.packb(header, use_bin_type=True), *self.buffers[name]]

    def without(self, name: str, key: str) -> list[Any]:
        header = {k: v for k, v in self.headers[name].items() if k != key}
        return [msgpack.packb(header, use_bin_type=True), *self.buffers[name]]

    # Each mutation returns (parts, expected reason or None, description).

    def random_bytes(self) -> Case:
        parts = [self.rng.bytes(int(self.rng.integers(0, 300)))]
        parts += [
            self.rng.bytes(int(self.rng.integers(0, 50))) for _ in range(self.rng.integers(3))
        ]
        return parts, None, "random bytes"

    def trailing_junk(self) -> Case:
        name = self.name()
        parts = list(self.valid[name])
        parts[0] = bytes(parts[0]) + self.rng.bytes(int(self.rng.integers(1, 20)))
        return parts, "garbage", f"{name}: header + junk"

    def truncated_header(self) -> Case:
        name = self.name()
        raw = bytes(self.valid[name][0])
        parts = [raw[: int(self.rng.integers(0, len(raw)))], *self.buffers[name]]
        return parts, "garbage", f"{name}: truncated header"

    def truncated_buffer(self) -> Case:
        name = self.name(arrays=True)
        parts = [self.valid[name][0], *self.buffers[name]]
        i = int(self.rng.integers(1, len(parts)))
        parts[i] = parts[i][: int(self.rng.integers(0, len(parts[i])))]
        return parts, "size_mismatch", f"{name}: part {i} truncated"

    def oversized_buffer(self) -> Case:
        name = self.name(arrays=True)
        parts = [self.valid[name][0], *self.buffers[name]]
        i = int(self.rng.integers(1, len(parts)))
        parts[i] = parts[i] + self.rng.bytes(int(self.rng.integers(1, 100)))
        return parts, "size_mismatch", f"{name}: part {i} oversized"

    def bad_dtype_string(self) -> Case:
        name = self.pick(["start", "frame", "volume", "slices"])
        dtype = self.pick(self.DTYPES_BAD)
        return self.with_header(name, dtype=dtype), "bad_dtype", f"{name}: dtype {dtype!r}"

    def dtype_of_other_size(self) -> Case:
        name = self.name(arrays=True)  # arrays are float32 (4 bytes)
        dtype = self.pick(["|u1", "<u2", "<i2", "<f8", "uint8", "float64"])
        return self.with_header(name, dtype=dtype), "size_mismatch", f"{name}: dtype {dtype}"

    def shape_of_other_size(self) -> Case:
        name = self.name(arrays=True)
        key = self.pick([a[1] for a in schema._ARRAYS[name]])
        shape = [int(v) + int(self.rng.integers(1, 4)) for v in self.headers[name][key]]
        if name == "slices":  # keep the three slices consistent so the sizes are what fails
            z, y, x = self.headers[name]["xz_shape"][0], *self.headers[name]["xy_shape"]
            shape_all = {"xy_shape": [y + 1, x], "xz_shape": [z, x], "yz_shape": [z, y + 1]}
            return self.with_header(name, **shape_all), "size_mismatch", "slices: Y grown"
        return self.with_header(name, **{key: shape}), "size_mismatch", f"{name}: {key} {shape}"

    def unknown_type(self) -> Case:
        value = self.pick(self.TYPES_UNKNOWN)
        return self.with_header(self.name(), type=value), "unknown_type", f"type {value!r}"

    def bad_version(self) -> Case:
        name = self.name()
        value = name + self.pick(self.VERSIONS_BAD)
        return self.with_header(name, type=value), "bad_version", f"type {value!r}"

    def type_not_str(self) -> Case:
        value = self.pick([1, None, ["frame", 1], b"frame/1", 1.0, {"frame": 1}, True])
        return self.with_header(self.name(), type=value), "bad_field_type", f"type {value!r}"

    def missing_field(self) -> Case:
        name = self.name()
        keys = sorted(
            {"type"}
            | (schema._REQUIRED[name] & set(schema._FIELD_KINDS[name]))
            | {a[1] for a in schema._ARRAYS[name]}
            | ({"dtype"} if schema._ARRAYS[name] else set())
        )
        key = self.pick(keys)
        return self.without(name, key), "missing_field", f"{name}: no {key}"

    def required_is_nil(self) -> Case:
        name = self.name()
        key = self.pick(sorted(schema._REQUIRED[name] & set(schema._FIELD_KINDS[name])))
        return self.with_header(name, **{key: None}), "bad_field_type", f"{name}: {key}=nil"

    def non_finite(self) -> Case:
        bad = self.pick([math.nan, math.inf, -math.inf])
        name, changes = self.pick(
            [
                ("frame", {"angle_deg": bad}),
                ("frame", {"t_s": bad}),
                ("frame", {"exposure_s": bad}),
                ("frame", {"dose_e_per_A2": bad}),
                ("frame", {"temperature_C": bad}),
                ("frame", {"pixel_nm": bad}),
                ("frame", {"tilt_range_deg": [-70.0, bad]}),
                ("frame", {"stage_xyz": [0.0, bad, 0.0]}),
                ("volume", {"t_s": bad}),
                ("volume", {"voxel_nm": bad}),
                ("slices", {"t_s": bad}),
                ("metrics", {"t_s": bad}),
                ("metrics", {"values": {"loss": bad}}),
                ("start", {"pixel_nm": bad}),
                ("start", {"experiment": {"nested": [1.0, {"x": bad}]}}),
            ]
        )
        return self.with_header(name, **changes), "non_finite", f"{name}: {changes}"

    def non_finite_data(self) -> Case:
        name = self.name(arrays=True)
        parts = [self.valid[name][0], *self.buffers[name]]
        i = int(self.rng.integers(1, len(parts)))
        data = np.frombuffer(parts[i], np.float32).copy()
        data[int(self.rng.integers(data.size))] = self.pick([np.nan, np.inf, -np.inf])
        parts[i] = data.tobytes()
        return parts, "non_finite", f"{name}: non-finite pixel in part {i}"

    def bad_shape(self) -> Case:
        name = self.pick(["frame", "start"])
        key = "shape" if name == "frame" else "frame_shape"
        shape = self.pick(
            [
                [-1, 17],
                [0, 17],
                [13, -17],
                [13],
                [13, 17, 1],
                [],
                [1.5, 17],
                ["13", 17],
                [True, 17],
                [-(2**63), 1],
                [None, 17],
                [[13], 17],
            ]
        )
        return self.with_header(name, **{key: shape}), "bad_shape", f"{name}: {key} {shape}"

    def huge_shape(self) -> Case:
        name, key, shape = self.pick(
            [
                ("frame", "shape", [2**40, 2**40]),
                ("frame", "shape", [8193, 8192]),
                ("frame", "shape", [2**63, 2**63]),
                ("start", "frame_shape", [2**32, 2**32]),
                ("volume", "shape", [1025, 1024, 1024]),
                ("volume", "shape", [2**21, 2**21, 2**21]),
                ("slices", "xy_shape", [2**20, 2**20]),
            ]
        )
        return self.with_header(name, **{key: shape}), "too_large", f"{name}: {key} {shape}"

    def shape_not_list(self) -> Case:
        name = self.name(arrays=True)
        key = self.pick([a[1] for a in schema._ARRAYS[name]])
        value = self.pick(["13x17", 5, None, {"y": 13}, b"\x0d\x11", 13.0])
        return self.with_header(name, **{key: value}), "bad_field_type", f"{name}: {key}={value!r}"

    def non_map_header(self) -> Case:
        value = self.pick([[1, 2], 5, "frame/1", 1.5, None, True, b"\x80", [], ["type", "end/1"]])
        parts = [msgpack.packb(value, use_bin_type=True), *self.buffers[self.name()]]
        return parts, "not_a_map", f"header {value!r}"

    def wrong_field_type(self) -> Case:
        name, key, value = self.pick(
            [
                ("frame", "seq", "0"),
                ("frame", "seq", 1.0),
                ("frame", "seq", True),
                ("frame", "seq", [0]),
                ("frame", "stream_id", 5),
                ("frame", "stream_id", b"id"),
                ("frame", "stream_id", ["a"]),
                ("frame", "angle_deg", "1.0"),
                ("frame", "angle_deg", True),
                ("frame", "angle_deg", [1.0]),
                ("frame", "exposure_s", {}),
                ("frame", "focus_index", 1.5),
                ("frame", "stage_xyz", "0,0,0"),
                ("frame", "tilt_range_deg", 70.0),
                ("end", "n_frames", "144"),
                ("end", "reason", 0),
                ("volume", "source", None),
                ("volume", "n_frames_used", -0.5),
                ("slices", "index", "1,2,3"),
                ("metrics", "values", [1.0, 2.0]),
                ("metrics", "values", {"loss": "low"}),
                ("metrics", "values", {b"loss": 1.0}),
                ("start", "units", {"angle": 1}),
                ("start", "units", "deg"),
                ("start", "experiment", 5),
                ("start", "experiment", {"raw": b"\x00\x01"}),
                ("start", "experiment", {"ext": msgpack.ExtType(5, b"x")}),
                ("start", "experiment", {"when": msgpack.Timestamp(1, 0)}),
                ("start", "dtype", 2),
                ("start", "scheme", ["golden"]),
            ]
        )
        return (
            self.with_header(name, **{key: value}),
            "bad_field_type",
            f"{name}: {key}={value!r}",
        )

    def bad_value(self) -> Case:
        name, key, value = self.pick(
            [
                ("frame", "seq", -1),
                ("frame", "seq", -(2**63)),
                ("frame", "seq", 2**64 - 1),
                ("frame", "exposure_s", -0.1),
                ("frame", "pixel_nm", 0.0),
                ("frame", "temperature_C", -300.0),
                ("frame", "tilt_range_deg", [70.0, -70.0]),
                ("frame", "tilt_range_deg", [1.0, 2.0, 3.0]),
                ("frame", "stage_xyz", [1.0, 2.0]),
                ("frame", "stream_id", ""),
                ("frame", "stream_id", "x" * 1000),
                ("frame", "focus_index", -1),
                ("end", "n_frames", -1),
                ("volume", "voxel_nm", -0.5),
                ("slices", "index", [5, 0, 0]),
                ("slices", "index", [0, 13, 0]),
                ("slices", "index", [0, 0, 17]),
                ("slices", "index", [0, -1, 0]),
                ("slices", "index", [0, 0]),
            ]
        )
        return self.with_header(name, **{key: value}), "bad_value", f"{name}: {key}={value!r}"

    def inconsistent_slices(self) -> Case:
        key = self.pick(["xy_shape", "xz_shape", "yz_shape"])
        shape = [int(v) + 1 for v in self.headers["slices"][key]]
        return self.with_header("slices", **{key: shape}), "bad_shape", f"slices: {key} {shape}"

    def extra_parts(self) -> Case:
        name = self.name()
        extra = [
            self.rng.bytes(int(self.rng.integers(0, 30))) for _ in range(self.rng.integers(1, 4))
        ]
        return [*self.valid[name], *extra], "extra_parts", f"{name}: +{len(extra)} parts"

    def missing_part(self) -> Case:
        name = self.name(arrays=True)
        parts = list(self.valid[name])
        keep = int(self.rng.integers(1, len(parts)))
        return parts[:keep], "missing_part", f"{name}: {keep} of {len(parts)} parts"

    def no_parts(self) -> Case:
        return [], "missing_part", "no parts"

    def not_a_buffer(self) -> Case:
        name = self.name()
        parts = list(self.valid[name])
        i = int(self.rng.integers(len(parts)))
        parts[i] = self.pick([None, 5, "text", object(), 1.5, ["a"], memoryview(b"abcdef")[::2]])
        return parts, "garbage", f"{name}: part {i} = {parts[i]!r}"

    def not_a_list(self) -> Case:
        value = self.pick([bytes(self.valid["end"][0]), "frame/1", None, 5, {"type": "end/1"}])
        return value, "garbage", f"message {value!r}"

    def huge_header(self) -> Case:
        name = self.pick(["start", "frame"])
        blob = "x" * int(self.rng.integers(65_537, 80_000))
        return self.with_header(name, note=blob), "too_large", f"{name}: {len(blob)} B header"

    def non_str_keys(self) -> Case:
        name = self.name()
        header = dict(self.headers[name])
        if self.rng.integers(2):
            header[b"seq"] = 1
            return [msgpack.packb(header, use_bin_type=True)], "bad_field_type", "bytes key"
        header[7] = 1
        return [msgpack.packb(header, use_bin_type=True)], "garbage", "int key"

    def deep_nesting(self) -> Case:
        depth = int(self.rng.integers(20, 100))
        value: Any = 1
        for _ in range(depth):
            value = [value]
        return self.with_header("start", experiment={"deep": value}), "too_large", f"depth {depth}"

    def deep_value_of_wrong_type(self) -> Case:
        depth = int(self.rng.integers(900, 1024))  # just inside msgpack's stack limit
        raw = b"\x82\xa4type\xa5end/1\xa9stream_id" + b"\x91" * depth + b"\x01"
        return [raw], "bad_field_type", f"stream_id nested {depth} deep"

    def very_deep_nesting(self) -> Case:
        depth = int(self.rng.integers(2000, 10_000))
        raw = b"\x81\xa4type" + b"\x91" * depth + b"\x01"
        return [raw], "garbage", f"msgpack depth {depth}"

    def too_many_metrics(self) -> Case:
        values = {f"m{i}": float(i) for i in range(int(self.rng.integers(257, 400)))}
        return self.with_header("metrics", values=values), "too_large", f"{len(values)} metrics"

    def bit_flip(self) -> Case:
        name = self.name()
        raw = bytearray(self.valid[name][0])
        raw[int(self.rng.integers(len(raw)))] ^= 1 << int(self.rng.integers(8))
        return [bytes(raw), *self.buffers[name]], "maybe", f"{name}: bit flip"

    def mutations(self) -> list[Callable[[], Case]]:
        return [
            getattr(self, n)
            for n in dir(self)
            if not n.startswith("_")
            and n not in {"pick", "name", "with_header", "without", "mutations", "bit_flip"}
            and callable(getattr(self, n))
        ]


def test_hostile_messages_raise_protocol_error_only(
    rng: np.random.Generator, caplog: pytest.LogCaptureFixture
) -> None:
    hostile = Hostile(rng)
    mutations = hostile.mutations()
    assert len(mutations) >= 30
    counter = RejectCounter(name="test", burst=5, interval_s=1e9, clock=lambda: 0.0)
    seen: collections.Counter[str] = collections.Counter()
    problems = []
    caplog.set_level(logging.WARNING, logger="tiltstream.stream.protocol")
    for i in range(N_HOSTILE):
        parts, expected, what = mutations[i % len(mutations)]()
        try:
            msg = unpack(parts)
        except ProtocolError as error:
            seen[error.reason] += 1
            if error.reason not in REASONS:
                problems.append(f"{what}: undocumented reason {error.reason!r}")
            elif expected is not None and error.reason != expected:
                problems.append(f"{what}: expected {expected}, got {error}")
            assert error.detail
        except Exception as error:  # noqa: BLE001 - the point of the test
            problems.append(f"{what}: {type(error).__name__}: {error}")
            continue
        else:
            problems.append(f"{what}: accepted as {msg!r}")
            continue
        assert try_unpack(parts, counter) is None
    assert not problems, "\n".join(problems[:20])
    assert sum(seen.values()) == N_HOSTILE
    assert counter.total == N_HOSTILE
    assert counter.by_reason == dict(seen)
    assert counter.snapshot() == {"total": N_HOSTILE, "by_reason": dict(seen)}
    assert set(seen) == REASONS - {"unknown_field"}  # every code is exercised (strict: below)
    logged = [r for r in caplog.records if "rejected message" in r.getMessage()]
    assert len(logged) == 5  # rate-limited: the rest is counted, not logged


def test_bit_flipped_headers_never_raise_anything_else(rng: np.random.Generator) -> None:
    hostile = Hostile(rng)
    outcomes: collections.Counter[str] = collections.Counter()
    for _ in range(1000):
        parts, _, what = hostile.bit_flip()
        try:
            msg = unpack(parts)
        except ProtocolError as error:
            assert error.reason in REASONS, what
            outcomes[error.reason] += 1
        else:
            outcomes["accepted"] += 1
            assert unpack(pack(msg)) == msg, what  # whatever is accepted is a valid message
    assert len(outcomes) >= 4


def test_limits_are_configurable(rng: np.random.Generator) -> None:
    parts = pack(make_frame(rng))  # 13 x 17 = 221 pixels
    assert unpack(parts, limits=Limits(max_frame_elements=221)).data.shape == (13, 17)
    with pytest.raises(ProtocolError) as info:
        unpack(parts, limits=Limits(max_frame_elements=220))
    assert info.value.reason == "too_large"
    with pytest.raises(ProtocolError) as info:
        pack(make_frame(rng), limits=Limits(max_frame_elements=220))
    assert info.value.reason == "too_large"
    with pytest.raises(ProtocolError) as info:
        unpack(pack(make_volume(rng)), limits=Limits(max_volume_elements=5 * 13 * 17 - 1))
    assert info.value.reason == "too_large"


@pytest.mark.parametrize(
    "name, key, limit, reason",
    [
        ("frame", "shape", [8192, 8192], "size_mismatch"),  # at the default limit: sizes checked
        ("frame", "shape", [8192, 8193], "too_large"),
        ("volume", "shape", [1024, 1024, 1024], "size_mismatch"),
        ("volume", "shape", [1024, 1024, 1025], "too_large"),
    ],
)
def test_default_size_limits(
    name: str, key: str, limit: list[int], reason: str, rng: np.random.Generator
) -> None:
    parts = pack(MAKERS[name](rng))
    header = dict(msgpack.unpackb(parts[0]), **{key: limit})
    with pytest.raises(ProtocolError) as info:
        unpack([msgpack.packb(header), *parts[1:]])
    assert info.value.reason == reason
    assert DEFAULT_LIMITS.max_frame_elements == 8192 * 8192


def test_unknown_fields_ignored_unless_strict(rng: np.random.Generator) -> None:
    msg = make_frame(rng)
    parts = pack(msg)
    header = dict(msgpack.unpackb(parts[0]), future_field=1)
    parts = [msgpack.packb(header), *parts[1:]]
    assert unpack(parts) == msg
    with pytest.raises(ProtocolError) as info:
        unpack(parts, limits=Limits(strict=True))
    assert info.value.reason == "unknown_field"
    assert "future_field" in info.value.detail
    assert unpack(pack(msg), limits=Limits(strict=True)) == msg


def test_error_detail_names_field_expected_and_actual() -> None:
    parts = pack(_frame())
    header = dict(msgpack.unpackb(parts[0]), angle_deg="ten")
    with pytest.raises(ProtocolError) as info:
        unpack([msgpack.packb(header), parts[1]])
    assert info.value.reason == "bad_field_type"
    assert "angle_deg" in info.value.detail and "'ten'" in info.value.detail
    assert str(info.value).startswith("bad_field_type: ")
    with pytest.raises(ProtocolError) as info:
        unpack([parts[0], parts[1][:-2]])
    assert "30 bytes" in info.value.detail and "got 28" in info.value.detail


def test_non_finite_data_check_can_be_turned_off() -> None:
    data = np.zeros((3, 5), np.float32)
    parts = pack(_frame(data=data))
    bad = data.copy()
    bad[1, 2] = np.nan
    with pytest.raises(ProtocolError):
        unpack([parts[0], bad.tobytes()])
    out = unpack([parts[0], bad.tobytes()], limits=Limits(check_data_finite=False))
    assert np.isnan(out.data[1, 2])
    huge = np.full((3, 5), np.finfo(np.float64).max)  # finite, but Inf in float32: refused unless unchecked
    with pytest.raises(ProtocolError, match="beyond the float32 range"):
        unpack(pack(_frame(data=huge)))
    assert unpack(pack(_frame(data=huge)), limits=Limits(check_data_finite=False)) == _frame(data=huge)


# ------------------------------------------------------------------------------------------------
# Fast paths (frame/1) agree with the general rules.

ODD_VALUES: list[Any] = [
    None, 0, 1, -1, 2**63, -(2**63), True, False, 0.0, -0.0, -1.0, 1.5, -273.15, -300.0, 1e308,
    math.nan, math.inf, -math.inf, "", "x", "x" * 300, "<f4", "uint16", ">f4", [], [1.0],
    [1.0, 2.0], [2.0, 1.0], [1.0, math.nan], [1, 2], [1.0, 2.0, 3.0], [1.0, math.inf, 3.0],
    [13, 17], [13, 0], [13.0, 17], [8192, 8193], {"a": 1.0}, b"\x00",
]


def frame_headers(rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    """Valid frame/1 headers with 0-3 fields replaced by odd values or removed (msgpack types)."""
    base = msgpack.unpackb(pack(make_frame(rng, dtype=np.float32))[0])
    keys = sorted(base.keys() - {"type"}) + ["unknown_key"]
    headers = []
    for _ in range(n):
        header = dict(base)
        for key in rng.choice(keys, size=int(rng.integers(0, 4)), replace=False):
            if rng.random() < 0.2:
                header.pop(key, None)
            else:
                header[key] = ODD_VALUES[int(rng.integers(len(ODD_VALUES)))]
        headers.append(header)
    return headers


def test_frame_fast_path_accepts_only_what_full_validation_accepts(
    rng: np.random.Generator,
) -> None:
    fast_taken = fallbacks = 0
    for header in frame_headers(rng, 3000):
        fast = validate_frame_fast(header, DEFAULT_LIMITS)
        if fast is None:
            fallbacks += 1
            continue
        fast_taken += 1
        fields, shape, dtype = fast
        cls, kwargs, specs = validate_header(header, DEFAULT_LIMITS)  # must not raise
        assert cls is FrameMsg and kwargs == fields, header
        assert [type(v) for v in kwargs.values()] == [type(v) for v in fields.values()]
        assert specs == [("data", shape, dtype)], header
    assert fast_taken >= 300 and fallbacks >= 300  # both branches exercised
    strict = Limits(strict=True)
    assert all(validate_frame_fast(h, strict) is None for h in frame_headers(rng, 10))


def test_unpack_fast_and_general_paths_give_equal_messages(rng: np.random.Generator) -> None:
    msg = make_frame(rng, dtype=np.float32)
    header = msgpack.unpackb(pack(msg)[0])
    parts = pack(msg)
    assert validate_frame_fast(header, DEFAULT_LIMITS) is not None  # takes the fast path
    via_ints = dict(header, angle_deg=-37, t_s=12)  # ints where floats go: the general path
    assert validate_frame_fast(via_ints, DEFAULT_LIMITS) is None
    slow = unpack([msgpack.packb(via_ints), parts[1]])
    fast = unpack(parts)
    assert fast == msg and slow == dataclasses.replace(msg, angle_deg=-37.0, t_s=12.0)
    assert type(slow.angle_deg) is float and type(fast.tilt_range_deg) is tuple
    assert not fast.data.flags.writeable


def test_frame_from_fields_equals_the_constructor(rng: np.random.Generator) -> None:
    for full in (False, True):
        msg = make_frame(rng, full=full)
        values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}
        required = {k: v for k, v in values.items() if v is not None}
        built = messages._frame_from_fields(required)
        assert built == msg and repr(built) == repr(msg)
        assert all(hasattr(built, f.name) for f in dataclasses.fields(FrameMsg))
        with pytest.raises(dataclasses.FrozenInstanceError):
            built.seq = 8  # type: ignore[misc]


def test_pack_fast_and_general_paths_encode_the_same_header(rng: np.random.Generator) -> None:
    msg = make_frame(rng, dtype=np.float32)
    numpy_typed = dataclasses.replace(  # not plain Python values: pack takes the general path
        msg, seq=np.int64(7), angle_deg=np.float32(-37.5), tilt_range_deg=np.array([-70.0, 70.0])
    )
    assert pack(numpy_typed)[0] == pack(msg)[0]
    assert unpack(pack(numpy_typed)) == msg
    strided = dataclasses.replace(msg, data=np.asfortranarray(msg.data))
    assert pack(strided)[0] == pack(msg)[0] and unpack(pack(strided)) == msg


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5), (256, 256), (7, 10_007)])
def test_finite_screen_finds_every_nan_and_inf(
    dtype: Any, shape: tuple[int, int], rng: np.random.Generator
) -> None:
    data = random_array(rng, shape, dtype)
    header = pack(_frame(data=data))[0]
    n = data.size
    for position in (0, n - 1, n // 2, int(rng.integers(n))):
        for bad in (np.nan, np.inf, -np.inf):
            broken = data.copy().reshape(-1)
            broken[position] = bad
            with pytest.raises(ProtocolError) as info:
                unpack([header, broken.tobytes()])
            assert info.value.reason == "non_finite"
    big = np.full(shape, np.finfo(np.float32).max / 2, dtype)  # the screen overflows; data fits float32
    big[0, 0] = -big[0, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(unpack([header, big.tobytes()]).data, big)
        if dtype == np.float64:  # one value beyond float32's range, which the solvers compute in
            big[-1, -1] = -1e39
            with pytest.raises(ProtocolError, match="non_finite"):
                unpack([header, big.tobytes()])


# ------------------------------------------------------------------------------------------------
# Sequence tracking.


def statuses(tracker: SeqTracker, stream_id: str, seqs: list[int]) -> list[SeqStatus]:
    return [tracker.check(stream_id, s).status for s in seqs]


def test_seq_in_order() -> None:
    tracker = SeqTracker()
    assert statuses(tracker, "A", [0, 1, 2, 3]) == [SeqStatus.NEW_SERIES] + [SeqStatus.OK] * 3
    assert tracker.n_missing == 0 and tracker.last_seq == 3


def test_seq_gap_reports_missing_range() -> None:
    tracker = SeqTracker()
    statuses(tracker, "A", [0, 1])
    result = tracker.check("A", 4)
    assert result.status is SeqStatus.GAP and result.accepted
    assert result.missing == range(2, 4)
    assert tracker.check("A", 5).status is SeqStatus.OK
    huge = tracker.check("A", 2**62)
    assert len(huge.missing) == 2**62 - 6 and tracker.n_missing == 2 + 2**62 - 6


def test_seq_duplicates_and_reordering_are_rejected() -> None:
    tracker = SeqTracker()
    statuses(tracker, "A", [0, 1, 2])
    dup = tracker.check("A", 2)
    assert dup.status is SeqStatus.DUPLICATE and not dup.accepted
    late = tracker.check("A", 0)
    assert late.status is SeqStatus.OUT_OF_ORDER and not late.accepted
    assert tracker.check("A", 3).status is SeqStatus.OK
    assert tracker.n_rejected == 2


def test_new_series_resets_and_old_series_is_stale() -> None:
    tracker = SeqTracker()
    statuses(tracker, "A", [0, 1, 2])
    new = tracker.check("B", 0)
    assert new.status is SeqStatus.NEW_SERIES and new.accepted and not new.missing
    stale = tracker.check("A", 3)
    assert stale.status is SeqStatus.STALE and not stale.accepted
    assert tracker.check("B", 1).status is SeqStatus.OK
    assert tracker.begin("A").status is SeqStatus.STALE
    assert tracker.current == "B"


def test_series_joined_midway_reports_earlier_frames_missing() -> None:
    tracker = SeqTracker()
    result = tracker.check("B", 5)
    assert result.status is SeqStatus.NEW_SERIES and result.missing == range(0, 5)


def test_start_frames_end_lifecycle() -> None:
    tracker = SeqTracker()
    assert tracker.begin("A").status is SeqStatus.NEW_SERIES
    assert tracker.begin("A").status is SeqStatus.DUPLICATE
    assert statuses(tracker, "A", [0, 1]) == [SeqStatus.OK, SeqStatus.OK]
    end = tracker.finish("A", 4)
    assert end.status is SeqStatus.GAP and end.missing == range(2, 4)
    assert tracker.check("A", 2).status is SeqStatus.STALE  # ended series
    tracker.begin("B")
    tracker.check("B", 0)
    assert tracker.finish("B", 1).status is SeqStatus.OK
    tracker.begin("C")
    statuses(tracker, "C", [0, 1, 2])
    assert tracker.finish("C", 2).status is SeqStatus.INCONSISTENT


def test_observe_dispatches_messages(rng: np.random.Generator) -> None:
    tracker = SeqTracker()
    start = make_start(rng)
    frame = make_frame(rng)  # seq 7
    end = make_end(rng)  # 144 frames
    assert tracker.observe(start).status is SeqStatus.NEW_SERIES
    assert tracker.observe(frame).missing == range(0, 7)
    assert tracker.observe(frame).status is SeqStatus.DUPLICATE
    assert tracker.observe(end).missing == range(8, 144)
    assert tracker.observe(frame).status is SeqStatus.STALE


def test_stale_memory_is_bounded() -> None:
    tracker = SeqTracker(max_old_series=2)
    for sid in "ABCD":
        tracker.check(sid, 0)
    assert tracker.check("B", 1).status is SeqStatus.STALE
    assert tracker.check("A", 1).status is SeqStatus.NEW_SERIES  # forgotten


# ------------------------------------------------------------------------------------------------
# Reject counting.


def test_seq_numbers_count_each_type_from_zero_in_each_series() -> None:
    numbers = SeqNumbers()
    got = [(name, numbers.next("a", name)) for name in ["slices", "metrics", "volume", "slices", "metrics",
                                                           "slices", "volume", "frame", "frame"]]
    assert got == [("slices", 0), ("metrics", 0), ("volume", 0), ("slices", 1), ("metrics", 1),
                   ("slices", 2), ("volume", 1), ("frame", 0), ("frame", 1)]
    assert numbers.next("b", "volume") == 0 and numbers.next("b", "slices") == 0  # a new series
    assert sequence_key("start") == sequence_key("frame") == sequence_key("end") == "series"
    assert sequence_key("volume") == "volume" != sequence_key("slices")


def test_seq_numbers_are_thread_safe() -> None:
    numbers = SeqNumbers()
    out: list[int] = []

    def work() -> None:
        out.extend(numbers.next("a", "volume") for _ in range(2000))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(out) == list(range(8000))


def test_reject_counter_rate_limits_logging(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    counter = RejectCounter(name="sub", burst=3, interval_s=5.0, clock=lambda: now[0])
    caplog.set_level(logging.WARNING, logger="tiltstream.stream.protocol")
    for i in range(1000):
        counter.record(ProtocolError("garbage" if i % 2 else "bad_dtype", f"junk {i}"))
    assert len(caplog.records) == 3
    now[0] = 6.0
    counter.record(ProtocolError("too_large", "big"))
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 5
    assert "997 more rejects" in messages[3] and "'garbage': 499" in messages[3]
    assert "too_large" in messages[4]
    assert counter.total == 1001
    assert counter.by_reason == {"garbage": 500, "bad_dtype": 500, "too_large": 1}
    snap = counter.snapshot()
    snap["by_reason"]["garbage"] = 0
    assert counter.snapshot()["by_reason"]["garbage"] == 500
    counter.flush()
    assert len(caplog.records) == 5  # nothing suppressed since the last window
    counter.reset()
    assert counter.total == 0 and counter.by_reason == {}


def test_try_unpack_counts_rejects(rng: np.random.Generator) -> None:
    counter = RejectCounter()
    msg = make_end(rng)
    assert try_unpack(pack(msg), counter) == msg
    assert try_unpack([b"\xc1"], counter) is None
    assert try_unpack([msgpack.packb([1])], counter) is None
    assert counter.snapshot() == {"total": 2, "by_reason": {"garbage": 1, "not_a_map": 1}}
