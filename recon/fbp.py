"""Filtered backprojection for quick looks, with angular weights for uneven (golden-ratio) sampling."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from tiltstream.recon.projector import Projector

__all__ = ["fbp", "angular_weights", "ramp_filter"]

#: the ramp's windows: gain at frequency f (cycles/pixel)
_WINDOWS = {
    "ram-lak": lambda f: 1.0,
    "shepp-logan": np.sinc,
    "hann": lambda f: 0.5 * (1 + np.cos(2 * np.pi * f)),
    "cosine": lambda f: np.cos(np.pi * f),
}


def angular_weights(angles_deg: np.ndarray) -> np.ndarray:
    """Δθ (radians) each angle stands for: half the gap to each neighbour in sorted order.

    End angles get one full gap (their outer half-gap mirrors the inner one). Repeated angles share
    their interval. Sums to ≈ the covered range, so limited-range series are not over-weighted.
    """
    a = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    if a.size == 1:
        return np.array([np.pi])
    uniq, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    if uniq.size == 1:
        return np.full(a.size, np.pi / a.size)
    gaps = np.diff(uniq)
    w_u = np.empty_like(uniq)
    w_u[1:-1] = 0.5 * (gaps[:-1] + gaps[1:])
    w_u[0], w_u[-1] = gaps[0], gaps[-1]
    return w_u[inverse] / counts[inverse]


def ramp_filter(n_det: int, window: str = "ram-lak") -> np.ndarray:
    """Frequency response (length of the padded FFT) of the ramp |f| (f in cycles/pixel), windowed.

    Built from the band-limited spatial kernel (Kak & Slaney eq. 61) so the DC term is right.
    """
    if window not in _WINDOWS:
        raise ValueError(f"window: expected one of {tuple(_WINDOWS)}, got {window!r}")
    size = max(64, int(2 ** np.ceil(np.log2(2 * n_det))))
    n = np.concatenate([np.arange(0, size // 2 + 1), np.arange(-size // 2 + 1, 0)])
    h = np.zeros(size)
    h[0] = 0.25
    odd = n % 2 == 1
    h[odd] = -1.0 / (np.pi * n[odd]) ** 2
    return np.real(np.fft.fft(h)) * _WINDOWS[window](np.fft.fftfreq(size))


def fbp(A: Projector, y: Any, *, window: str = "shepp-logan", min_value: float | None = None) -> Any:
    """FBP of projections ``y`` (N, Y, U) with the adjoint of ``A`` as backprojector.

    Returns a (Z, Y, X) volume in the units of the voxel values (a projection of a constant-1 voxel
    block of thickness d has value d). numpy in → numpy out.
    """
    is_numpy = not isinstance(y, torch.Tensor)
    yt = torch.as_tensor(np.ascontiguousarray(y) if is_numpy else y).to(A.device, A.dtype)
    if tuple(yt.shape) != A.range_shape:
        raise ValueError(f"projections: expected shape {A.range_shape}, got {tuple(yt.shape)}")
    n_det = yt.shape[-1]
    resp = torch.as_tensor(ramp_filter(n_det, window), device=A.device, dtype=A.dtype)
    size = resp.numel()
    spec = torch.fft.rfft(yt, n=size, dim=-1) * resp[: size // 2 + 1]
    q = torch.fft.irfft(spec, n=size, dim=-1)[..., :n_det]
    w = torch.as_tensor(angular_weights(A.proj_geom.angles_deg), device=A.device, dtype=A.dtype)
    q = q * w[:, None, None]
    x = A.adjoint(q.contiguous())
    if min_value is not None:
        x.clamp_(min=min_value)
    return x.cpu().numpy() if is_numpy else x
