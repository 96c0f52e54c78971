"""Sub-pixel image registration: filtered cross-correlation with an upsampled-DFT peak search.

The peak of the (optionally whitened) cross-power spectrum is located to one pixel with an FFT, then
refined on a ``upsample``-times finer grid around it with a matrix-multiply DFT (Guizar-Sicairos,
Thurman & Fienup, Opt. Lett. 33, 156 (2008)), so the cost of the refinement does not grow with the
upsampling factor. Images are made comparable first: zero mean, an edge taper (Tukey window) so the
periodic FFT sees no frame border, and a Gaussian band-pass that drops the smooth overall blob
(which every frame of a compact particle shares) and the pixel noise.

Sign convention everywhere in :mod:`tiltstream.recon.align`: ``shift`` is the displacement of the
content of ``moving`` relative to ``reference``, i.e. ``moving(p) ≈ reference(p − shift)``; a
frame is corrected by moving it by ``−shift``. Shifts are (dy, du) = (rows, columns) in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache, reduce

import numpy as np

__all__ = [
    "RegistrationFilter",
    "fourier_shift",
    "gaussian_band",
    "prepare",
    "register",
    "register_spectra",
    "tukey_window",
]


@dataclass(frozen=True)
class RegistrationFilter:
    """How frames are prepared before they are correlated.

    low_cut : Gaussian high-pass cut-off in cycles/pixel (features larger than ~1/low_cut pixels
        are suppressed; 0 disables it).
    high_cut : Gaussian low-pass cut-off in cycles/pixel (noise suppression; ≥ 0.5 disables it).
    whiten : exponent p of the spectral normalisation ``R / |R|^p`` of the cross-power spectrum
        R (0: plain cross-correlation, 1: phase correlation).
    taper : fraction of each edge rolled off by the Tukey window (0: none).
    upsample : sub-pixel refinement factor (precision ≈ 1/upsample pixel).
    max_shift : largest shift searched, in pixels per axis (None: up to half the frame).
    """

    low_cut: float = 0.01
    high_cut: float = 0.25
    whiten: float = 0.3
    taper: float = 0.2
    upsample: int = 20
    max_shift: float | None = None

    def __post_init__(self) -> None:
        if not (0 <= self.low_cut < self.high_cut):
            raise ValueError(f"low_cut, high_cut: expected 0 ≤ low_cut < high_cut, got {self.low_cut}, {self.high_cut}")
        if not (0 <= self.whiten <= 1):
            raise ValueError(f"whiten: expected 0 ≤ p ≤ 1, got {self.whiten}")
        if not (0 <= self.taper <= 1):
            raise ValueError(f"taper: expected a fraction in [0, 1], got {self.taper}")
        if self.upsample < 1:
            raise ValueError(f"upsample: expected ≥ 1, got {self.upsample}")


def tukey_window(n: int, fraction: float) -> np.ndarray:
    """1-D Tukey (tapered cosine) window of length ``n`` with ``fraction`` of it tapered."""
    if fraction <= 0 or n < 3:
        return np.ones(n)
    x = np.linspace(0.0, 1.0, n)
    w = np.ones(n)
    a = min(fraction, 1.0)
    lo = x < a / 2
    hi = x > 1 - a / 2
    w[lo] = 0.5 * (1 + np.cos(2 * np.pi / a * (x[lo] - a / 2)))
    w[hi] = 0.5 * (1 + np.cos(2 * np.pi / a * (x[hi] - 1 + a / 2)))
    return w


def gaussian_band(f2: np.ndarray, low_cut: float, high_cut: float) -> np.ndarray:
    """Band-pass weights at squared frequencies ``f2`` (cycles/pixel)²: a Gaussian low-pass at
    ``high_cut`` (none at ≥ 0.5) times a Gaussian high-pass at ``low_cut`` (none at 0)."""
    w = np.ones_like(f2)
    if high_cut < 0.5:
        w *= np.exp(-f2 / (2 * high_cut**2))
    if low_cut > 0:
        w *= 1.0 - np.exp(-f2 / (2 * low_cut**2))
    return w


@lru_cache(maxsize=32)
def _window(shape: tuple[int, ...], fraction: float) -> np.ndarray:
    return math.prod(np.meshgrid(*(tukey_window(n, fraction) for n in shape), indexing="ij", sparse=True))


@lru_cache(maxsize=32)
def _bandpass(shape: tuple[int, ...], low_cut: float, high_cut: float) -> np.ndarray:
    """:func:`gaussian_band` on the full FFT grid of ``shape``."""
    f2 = sum(np.meshgrid(*(np.fft.fftfreq(n) ** 2 for n in shape), indexing="ij", sparse=True))
    return gaussian_band(f2, low_cut, high_cut)


def prepare(image: np.ndarray, filt: RegistrationFilter) -> np.ndarray:
    """The filtered spectrum of ``image`` (zero mean, tapered, band-passed)."""
    a = np.asarray(image, dtype=np.float64)
    w = _window(a.shape, filt.taper)
    # subtract the level at the frame edge (not the mean: a mean-subtracted, tapered compact particle
    # would carry a stationary window-shaped dip that pulls every peak towards zero shift)
    edge = w < 1.0
    a = (a - (np.median(a[edge]) if edge.any() else np.mean(a))) * w
    return np.fft.fftn(a) * _bandpass(a.shape, filt.low_cut, filt.high_cut)


def _upsampled_dft(spec: np.ndarray, region: int, factor: int, offsets: np.ndarray) -> np.ndarray:
    """``Σ_k spec_k · exp(−2πi k·p/n)`` on a ``region``-wide grid of positions ``p`` spaced
    1/``factor`` pixel that starts at ``−offsets/factor``: one matrix product per axis."""
    out = spec
    for n, off in list(zip(spec.shape, offsets))[::-1]:
        kernel = np.exp(-2j * np.pi * (np.arange(region) - off)[:, None] * np.fft.fftfreq(n, factor)[None, :])
        out = np.tensordot(kernel, out, axes=(1, -1))  # contracts the last axis, prepends the new one
    return out


def _cross_power(f_ref: np.ndarray, f_mov: np.ndarray, whiten: float) -> np.ndarray:
    r = f_mov * np.conj(f_ref)
    if whiten > 0:
        r = r / (np.abs(r) + 1e-12 * np.max(np.abs(r)) + 1e-300) ** whiten
    return r


def _peak(r: np.ndarray, filt: RegistrationFilter) -> tuple[np.ndarray, float]:
    """Sub-pixel location (signed) of the maximum of irfft(r) and its normalised height."""
    cc = np.real(np.fft.ifftn(r))
    shape = np.array(cc.shape)
    if filt.max_shift is not None:
        lim = np.floor(np.minimum(filt.max_shift, shape // 2))
        inside = (np.abs(np.fft.fftfreq(n) * n) <= m for n, m in zip(cc.shape, lim))
        cc = np.where(reduce(np.logical_and, np.meshgrid(*inside, indexing="ij", sparse=True)), cc, -np.inf)
    coarse = np.array(np.unravel_index(int(np.argmax(cc)), cc.shape), dtype=np.float64)
    coarse = np.where(coarse > shape // 2, coarse - shape, coarse)
    quality = float(np.max(cc) / (np.sum(np.abs(r)) / r.size + 1e-300))  # 1 when every phase agrees
    if filt.upsample == 1:
        return coarse, quality
    f = int(filt.upsample)
    region = int(np.ceil(f * 1.5))
    centre = region // 2
    offsets = centre - coarse * f
    # the inverse transform of r, i.e. Σ r·exp(+2πi k·p/n), as the conjugate of the forward sum of r̄
    fine = np.real(np.conj(_upsampled_dft(np.conj(r), region, f, offsets)))
    loc = np.array(np.unravel_index(int(np.argmax(fine)), fine.shape), dtype=np.float64)
    return coarse + (loc - centre) / f, quality


def register(
    reference: np.ndarray,
    moving: np.ndarray,
    filt: RegistrationFilter | None = None,
    *,
    reference_spectrum: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Shift of ``moving`` relative to ``reference`` (same shape, 2-D or 1-D), sub-pixel.

    Parameters
    ----------
    reference, moving : images (Y, U) or profiles (Y,) of the same shape.
    filt : preparation and search settings (:class:`RegistrationFilter` defaults).
    reference_spectrum : ``prepare(reference, filt)`` when correlating many frames with one reference.

    Returns
    -------
    shift : (ndim,) float array, ``moving(p) ≈ reference(p − shift)``, in pixels.
    quality : height of the normalised correlation peak (≈1 for identical images, ≈0 for no match).
    """
    filt = filt or RegistrationFilter()
    ref = np.asarray(reference)
    mov = np.asarray(moving)
    if ref.shape != mov.shape:
        raise ValueError(f"register: expected images of the same shape, got {ref.shape} and {mov.shape}")
    if not (np.isfinite(ref).all() and np.isfinite(mov).all()):
        raise ValueError("register: expected finite pixel values, got NaN/Inf")
    f_ref = prepare(ref, filt) if reference_spectrum is None else reference_spectrum
    return register_spectra(f_ref, prepare(mov, filt), filt)


def register_spectra(
    f_ref: np.ndarray, f_mov: np.ndarray, filt: RegistrationFilter | None = None
) -> tuple[np.ndarray, float]:
    """:func:`register` for spectra already made by :func:`prepare` with the same ``filt``."""
    filt = filt or RegistrationFilter()
    return _peak(_cross_power(f_ref, f_mov, filt.whiten), filt)


def fourier_shift(image: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """``image`` moved by ``shift`` (pixels per axis) with the Fourier shift theorem (periodic)."""
    a = np.asarray(image, dtype=np.float64)
    freqs = (np.fft.fftfreq(n) * float(shift[axis]) for axis, n in enumerate(a.shape))
    phase = sum(np.meshgrid(*freqs, indexing="ij", sparse=True))
    return np.real(np.fft.ifftn(np.fft.fftn(a) * np.exp(-2j * np.pi * phase)))
