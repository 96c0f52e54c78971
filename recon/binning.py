"""Block averaging (binning): the one rule for frames, frame stacks and volumes.

An axis of n samples binned by ``factor`` becomes ``ceil(n / factor)`` samples: the last block is
completed with copies of the edge sample, so every measured sample counts and nothing is cropped.
That moves the axis centre by :func:`centre_shift_px` full-resolution samples, which geometry that
cares (alignment) takes into account.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["bin_factor", "bin_frame", "binned_geometry", "block_mean", "centre_shift_px"]


def bin_factor(shape: tuple[int, ...], max_edge: int | None) -> int:
    """The smallest integer factor that brings every edge of ``shape`` to ≤ ``max_edge`` (1 for None)."""
    if max_edge is None:
        return 1
    if max_edge < 1:
        raise ValueError(f"max_edge: expected ≥ 1, got {max_edge}")
    return max(1, math.ceil(max(shape) / max_edge))


def block_mean(a: np.ndarray, factor: int, *, ndim: int | None = None) -> np.ndarray:
    """Mean over ``factor``-wide blocks of the last ``ndim`` axes (all axes by default), float32.

    Returns ``a`` itself (as float32) for ``factor == 1``.
    """
    arr = np.asarray(a, dtype=np.float32)
    if int(factor) != factor or factor < 1:
        raise ValueError(f"factor: expected a positive integer, got {factor}")
    factor = int(factor)
    if factor == 1:
        return arr
    k = arr.ndim if ndim is None else int(ndim)
    lead = arr.ndim - k
    pad = [(0, 0)] * lead + [(0, (-n) % factor) for n in arr.shape[lead:]]
    if any(p for _, p in pad):
        arr = np.pad(arr, pad, mode="edge")
    shape = list(arr.shape[:lead])
    for n in arr.shape[lead:]:
        shape += [n // factor, factor]
    return arr.reshape(shape).mean(axis=tuple(range(lead + 1, lead + 2 * k, 2)), dtype=np.float32)


def centre_shift_px(n: int, factor: int) -> float:
    """How far right (full-resolution samples) the centre of an n-sample axis moves when binned."""
    return ((-int(n)) % int(factor)) / 2.0


def bin_frame(frame: np.ndarray, factor: int) -> np.ndarray:
    """(Y, U) frame (or (N, Y, U) frames) block-averaged ``factor``×``factor`` (:func:`block_mean`)
    and divided by ``factor``: line integrals measured in binned-voxel lengths, so the volume
    reconstructed on the binned grid has the same voxel values as one on the full grid."""
    if factor == 1:
        return np.asarray(frame, dtype=np.float32)
    return block_mean(frame, factor, ndim=2) / np.float32(factor)


def binned_geometry(frame_shape: tuple[int, int], factor: int, axis_offset_px: float = 0.0) -> tuple[tuple[int, int], float]:
    """The (Y, U) shape of frames binned by ``factor`` (:func:`block_mean`) and the tilt axis offset
    in binned pixels right of the binned detector's centre, given ``axis_offset_px`` in full pixels
    (the completed last block moves the centre by :func:`centre_shift_px`)."""
    ny, nu = (int(n) for n in frame_shape)
    shape = (-(-ny // factor), -(-nu // factor))
    return shape, (float(axis_offset_px) - centre_shift_px(nu, factor)) / factor
