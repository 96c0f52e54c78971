"""Garbage mode: hostile multipart messages to prove that receivers survive junk.

:func:`garbage_messages` yields messages that every receiver must reject (each breaks the
protocol in one way: random bytes, truncated or oversized buffers, wrong shapes, NaN/Inf values,
unknown types and versions, missing or extra parts, absurd sizes, ...); :func:`send_garbage` sends
them through anything with a ``send_raw(parts, ...)`` method (:class:`~.transport.FrameSender`,
:class:`~.transport.Publisher`, :class:`~.transport.FanOutSender`). Like the garbage mode of
LiberTEM-live's simulators, this is for tests and for checking a deployment, not for production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np

from tiltstream.stream.messages import FrameMsg
from tiltstream.stream.protocol import pack

__all__ = ["garbage_messages", "send_garbage", "GARBAGE_KINDS"]

_Maker = Callable[[np.random.Generator, dict[str, Any], bytes], list[bytes]]


def _packb(header: Any) -> bytes:
    return msgpack.packb(header, use_bin_type=True)


def _random_bytes(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    return [rng.bytes(int(rng.integers(0, 200)))]


def _random_parts(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    return [rng.bytes(int(rng.integers(1, 100))) for _ in range(int(rng.integers(2, 5)))]


def _truncated_header(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    raw = _packb(h)
    return [raw[: int(rng.integers(0, len(raw)))], data]


def _truncated_data(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    return [_packb(h), data[: int(rng.integers(0, len(data)))]]


def _oversized_data(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    return [_packb(h), data + rng.bytes(int(rng.integers(1, 64)))]


def _wrong_shape(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    y, u = h["shape"]
    shape = [[y + 1, u], [y, u, 1], [y * u], [0, u], [-y, -u], "8x8", [y, 1.5]][int(rng.integers(7))]
    return [_packb({**h, "shape": shape}), data]


def _non_finite_field(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    key = ["angle_deg", "t_s", "exposure_s", "temperature_C"][int(rng.integers(4))]
    value = [float("nan"), float("inf"), -float("inf")][int(rng.integers(3))]
    return [_packb({**h, key: value}), data]


def _non_finite_data(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    values = np.frombuffer(data, dtype="<f4").copy()
    values[int(rng.integers(values.size))] = [np.nan, np.inf][int(rng.integers(2))]
    return [_packb(h), values.tobytes()]


def _bad_type(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    kind = ["bogus/1", "frame/2", "frame", "FRAME/1", "", "frame/x", 7, None][int(rng.integers(8))]
    return [_packb({**h, "type": kind}), data]


def _missing_field(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    key = ["type", "seq", "stream_id", "angle_deg", "t_s", "exposure_s", "shape", "dtype"][
        int(rng.integers(8))
    ]
    return [_packb({k: v for k, v in h.items() if k != key}), data]


def _wrong_field_type(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    changes = [{"seq": "7"}, {"seq": -1}, {"seq": 1.0}, {"stream_id": 5}, {"stream_id": ""},
               {"angle_deg": "10"}, {"exposure_s": -1.0}, {"stage_xyz": [1, 2]}]
    return [_packb({**h, **changes[int(rng.integers(len(changes)))]}), data]


def _not_a_map(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    header = [list(h.items()), 42, "frame/1", None, b"\x00" * 8][int(rng.integers(5))]
    return [_packb(header), data]


def _bad_dtype(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    dtype = ["complex64", "<c8", "object", ">f4x", "", "<f2"][int(rng.integers(6))]
    return [_packb({**h, "dtype": dtype}), data]


def _wrong_parts(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    if rng.integers(2):
        return [_packb(h)]  # data part missing
    return [_packb(h), data] + [data] * int(rng.integers(1, 40))  # extra parts


def _absurd_size(rng: np.random.Generator, h: dict[str, Any], data: bytes) -> list[bytes]:
    if rng.integers(2):
        return [_packb({**h, "shape": [100_000, 100_000]}), data]
    return [_packb({**h, "stream_id": "x" * 70_000}), data]  # header above the size limit


#: Kind name -> maker of one hostile message from a valid frame header and buffer.
GARBAGE_KINDS: dict[str, _Maker] = {
    "random_bytes": _random_bytes,
    "random_parts": _random_parts,
    "truncated_header": _truncated_header,
    "truncated_data": _truncated_data,
    "oversized_data": _oversized_data,
    "wrong_shape": _wrong_shape,
    "non_finite_field": _non_finite_field,
    "non_finite_data": _non_finite_data,
    "bad_type": _bad_type,
    "missing_field": _missing_field,
    "wrong_field_type": _wrong_field_type,
    "not_a_map": _not_a_map,
    "bad_dtype": _bad_dtype,
    "wrong_parts": _wrong_parts,
    "absurd_size": _absurd_size,
}


def garbage_messages(
    rng: np.random.Generator, n: int, *, frame_shape: tuple[int, int] = (7, 5)
) -> Iterator[list[bytes]]:
    """``n`` hostile multipart messages, cycling through :data:`GARBAGE_KINDS`.

    Each is built from a valid ``frame/1`` of ``frame_shape`` (Y, U) float32 and broken in one way,
    so each is rejected by :func:`~tiltstream.stream.protocol.unpack` under the default limits.
    """
    template = FrameMsg(
        seq=0, stream_id="garbage", angle_deg=0.0, t_s=0.0, exposure_s=0.1,
        temperature_C=20.0, data=rng.random(frame_shape, dtype=np.float32),
    )
    header_raw, data = (bytes(p) for p in pack(template))
    header = msgpack.unpackb(header_raw)
    makers = list(GARBAGE_KINDS.values())
    for i in range(n):
        yield makers[i % len(makers)](rng, header, data)


def send_garbage(sender: Any, rng: np.random.Generator, n: int, **send_kwargs: Any) -> int:
    """Send ``n`` messages from :func:`garbage_messages` with ``sender.send_raw``; return how many
    were taken (a lossless sender may time out; a publisher may drop)."""
    return sum(bool(sender.send_raw(parts, **send_kwargs)) for parts in garbage_messages(rng, n))
