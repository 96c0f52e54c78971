"""Tilt-axis profiles: the one projection of a tilt series that does not depend on the tilt angle.

Summing a frame across the tilt axis gives, at each height y along the axis, the total mass of the
(Z, X) slice at that height: the same for every tilt angle (parallel beam, particle inside the
field of view). So the profiles of all frames agree up to a shift along the axis (the drift dy)
and up to slow changes of the particle itself, *if* they are summed exactly across the true axis.
That makes them the measuring stick for both the drift along the axis and the in-plane direction
of the axis (:mod:`.axis`).

Frames are expected background-free (:mod:`.normalize`), so pixels outside the particle add nothing
whatever the summing direction; for frames with a background, summing over the inscribed disc keeps
the set of pixels summed the same at every direction.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import sparse

from tiltstream.recon.align.xcorr import RegistrationFilter, gaussian_band, tukey_window

__all__ = ["axis_profiles", "align_profiles", "register_profiles", "shift_profiles", "profile_residual"]

#: profiles are smooth; a gentle filter keeps their shape for the comparison
PROFILE_FILTER = RegistrationFilter(low_cut=0.0, high_cut=0.3, whiten=0.0, taper=0.0, upsample=50)


@lru_cache(maxsize=64)
def _binning(shape: tuple[int, int], angle_deg: float, disc: bool, sub: int = 4) -> sparse.csr_matrix:
    """Sparse (pixels → bins) matrix summing a (Y, U) frame along the direction perpendicular to an
    axis at ``angle_deg`` (IMOD convention) into ``Y`` bins of one pixel.

    Each pixel is split into ``sub``×``sub`` points shared linearly between the two nearest bins:
    close to the exact footprint of a square pixel, so the blur of the binning hardly depends on
    where a feature sits (with one point per pixel it does, and that biases the axis search
    towards the pixel grid)."""
    ny, nu = shape
    r, c = np.mgrid[:ny, :nu].astype(np.float64)
    r = r.reshape(-1) - (ny - 1) / 2
    c = c.reshape(-1) - (nu - 1) / 2
    inside = np.ones(ny * nu) if not disc else (r**2 + c**2 <= (min(ny, nu) / 2) ** 2).astype(np.float64)
    a = np.deg2rad(angle_deg)
    sa, ca = -np.sin(a), np.cos(a)
    offs = (np.arange(sub) + 0.5) / sub - 0.5
    pix = np.arange(ny * nu)
    rows, cols, vals = [], [], []
    for dr in offs:
        for dc in offs:
            t = (c + dc) * sa + (r + dr) * ca + (ny - 1) / 2
            lo = np.floor(t)
            frac = t - lo
            for b, w in ((lo, 1 - frac), (lo + 1, frac)):
                rows.append(pix)
                cols.append(b.astype(np.int64))
                vals.append(w * inside / sub**2)
    rows, cols, vals = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    ok = (cols >= 0) & (cols < ny) & (vals > 0)
    return sparse.csr_matrix((vals[ok], (rows[ok], cols[ok])), shape=(ny * nu, ny))


def axis_profiles(frames: np.ndarray, angle_deg: float = 0.0, *, disc: bool = False) -> np.ndarray:
    """(N, Y) profiles of frames (N, Y, U) summed across an axis at ``angle_deg`` from the rows.

    With ``disc`` only the inscribed disc is summed (for frames whose background is not zero);
    otherwise the whole frame, which keeps a drifting particle near the frame edge whole."""
    f = np.asarray(frames, dtype=np.float64)
    if f.ndim != 3:
        raise ValueError(f"frames: expected a 3-D array (N, Y, U), got shape {f.shape}")
    m = _binning(f.shape[1:], round(float(angle_deg), 9), bool(disc))
    return np.asarray(f.reshape(f.shape[0], -1) @ m)


def _spectra(p: np.ndarray, filt: RegistrationFilter) -> np.ndarray:
    """Filtered rFFT of profiles (N, L): edge level removed, tapered, band-passed."""
    n = p.shape[1]
    w = tukey_window(n, filt.taper)
    edge = w < 1.0
    level = np.median(p[:, edge], axis=1, keepdims=True) if edge.any() else p.mean(axis=1, keepdims=True)
    band = gaussian_band(np.fft.rfftfreq(n) ** 2, filt.low_cut, filt.high_cut)
    return np.fft.rfft((p - level) * w, axis=1) * band


def register_profiles(reference: np.ndarray, profiles: np.ndarray,
                      filt: RegistrationFilter = PROFILE_FILTER, *, newton_steps: int = 6) -> np.ndarray:
    """Sub-pixel shift of each profile (N, L) relative to ``reference`` (L,), all at once.

    The integer peak of the cross-correlation is refined by Newton steps on its Fourier series,
    so the result is a smooth function of the data (no grid of upsampled positions).
    """
    p = np.atleast_2d(np.asarray(profiles, dtype=np.float64))
    n = p.shape[1]
    r = _spectra(p, filt) * np.conj(_spectra(np.asarray(reference, dtype=np.float64)[None, :], filt))
    cc = np.fft.irfft(r, n=n, axis=1)
    lim = n // 2 if filt.max_shift is None else int(min(filt.max_shift, n // 2))
    pos = np.fft.fftfreq(n) * n
    cc = np.where(np.abs(pos)[None, :] <= lim, cc, -np.inf)
    s = pos[np.argmax(cc, axis=1)]
    k = np.fft.rfftfreq(n) * n
    wk = np.where((k == 0) | ((n % 2 == 0) & (k == n // 2)), 1.0, 2.0)  # one-sided sum weights
    w = 2 * np.pi * k / n
    for _ in range(newton_steps):
        ph = np.exp(1j * w[None, :] * s[:, None]) * r * wk[None, :]
        d1 = np.real(np.sum(1j * w * ph, axis=1))
        d2 = np.real(np.sum(-(w**2) * ph, axis=1))
        step = np.where(d2 < 0, -d1 / np.where(d2 < 0, d2, -1.0), 0.0)
        s = s + np.clip(step, -0.5, 0.5)
    return s


def shift_profiles(profiles: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Profiles (N, L) each moved by its shift (Fourier shift, periodic)."""
    p = np.asarray(profiles, dtype=np.float64)
    n = p.shape[1]
    phase = np.exp(-2j * np.pi * np.fft.rfftfreq(n)[None, :] * np.asarray(shifts)[:, None])
    return np.fft.irfft(np.fft.rfft(p, axis=1) * phase, n=n, axis=1)


def align_profiles(profiles: np.ndarray, *, iterations: int = 3,
                   filt: RegistrationFilter = PROFILE_FILTER) -> tuple[np.ndarray, np.ndarray]:
    """Shift of every profile relative to their common shape, and the profiles moved into register.

    The reference is the mean of the aligned profiles, refined ``iterations`` times; the returned
    shifts have zero mean (a common shift is a translation of the whole particle, not drift).

    Returns
    -------
    shifts : (N,) in pixels, ``profile_i(y) ≈ reference(y − shifts[i])``.
    aligned : (N, Y) profiles moved by ``−shifts``.
    """
    p = np.asarray(profiles, dtype=np.float64)
    shifts = np.zeros(p.shape[0])
    aligned = p
    for _ in range(max(1, iterations)):
        shifts = register_profiles(aligned.mean(axis=0), p, filt)
        shifts = shifts - shifts.mean()
        aligned = shift_profiles(p, -shifts)
    return shifts, aligned


def profile_residual(aligned: np.ndarray, order: np.ndarray | None = None, *, neighbours: int = 3) -> float:
    """Disagreement of aligned profiles: Σ‖p_i − ref_i‖² / Σ‖p_i‖², with ref_i the mean of the
    ``neighbours`` profiles on each side of i in acquisition ``order`` (i itself excluded), so a
    particle that changes slowly over time is compared with itself as it was at about the same time."""
    p = np.asarray(aligned, dtype=np.float64)
    n = p.shape[0]
    idx = np.arange(n) if order is None else np.asarray(order)
    seq = p[idx]
    csum = np.concatenate([np.zeros((1, p.shape[1])), np.cumsum(seq, axis=0)])
    k = max(1, min(neighbours, (n - 1) // 2 if n > 2 else 1))
    lo = np.clip(np.arange(n) - k, 0, n)
    hi = np.clip(np.arange(n) + k + 1, 0, n)
    ref = (csum[hi] - csum[lo] - seq) / np.maximum(hi - lo - 1, 1)[:, None]
    return float(np.sum((seq - ref) ** 2) / (np.sum(seq**2) + 1e-300))
