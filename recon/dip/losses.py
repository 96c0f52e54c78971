"""Loss terms of the DIP fit: robust data term, total variation, learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from tiltstream.recon.dip.params import DipParams

__all__ = ["data_loss", "ramp_filter", "filter_rows", "tv_3d", "learning_rate"]


def ramp_filter(n_det: int, floor: float, device: torch.device | str = "cpu") -> torch.Tensor:
    """√ of the ramp weighting (2|f| + floor, 1 at Nyquist) on the rfft grid of rows padded to ≥ 2U.

    Filtering the residual with it makes the data term rᵀHr with H ≈ ramp: its gradient Aᵀ H r is a
    filtered backprojection, so all spatial frequencies of the volume converge at similar rates
    (unfiltered, Aᵀr favours the low ones, and fine detail takes many more steps)."""
    n_pad = 1 << max(1, math.ceil(math.log2(2 * n_det)))
    f = torch.fft.rfftfreq(n_pad, device=device)
    return torch.sqrt(2.0 * f + floor)


def filter_rows(r: torch.Tensor, sqrt_h: torch.Tensor) -> torch.Tensor:
    """Rows (..., U) → (..., n_pad) filtered with frequency response ``sqrt_h`` (zero-padded, linear)."""
    n_pad = 2 * (sqrt_h.numel() - 1)
    return torch.fft.irfft(torch.fft.rfft(r, n=n_pad, dim=-1) * sqrt_h, n=n_pad, dim=-1)


def data_loss(pred: torch.Tensor, meas: torch.Tensor, params: DipParams, data_scale: float,
              sqrt_h: torch.Tensor | None = None) -> torch.Tensor:
    """Mean misfit of predicted vs measured rows (F, R, U), residuals in units of the data's RMS,
    optionally ramp-filtered along U (``sqrt_h`` from :func:`ramp_filter`)."""
    r = (pred - meas) / data_scale
    if params.loss == "poisson":
        # Var(measured) ∝ expected counts: weight squared residuals by 1 / measured (floored at the RMS)
        r = r * torch.rsqrt(meas.clamp(min=0.0) / data_scale + 1.0)
    if sqrt_h is not None:
        r = filter_rows(r, sqrt_h)
    if params.loss == "huber":
        return F.huber_loss(r, torch.zeros_like(r), delta=params.huber_delta)
    return 0.5 * (r * r).mean()


def tv_3d(slices: torch.Tensor, *, along_rows: bool) -> torch.Tensor:
    """Mean anisotropic TV (mean |difference| between neighbours) of (F, R, Z, X) slices along Z and X,
    and along R (= Y) if the rows are neighbours (whole frames)."""
    terms = [slices.diff(dim=2).abs().mean(), slices.diff(dim=3).abs().mean()]
    if along_rows and slices.shape[1] > 1:
        terms.append(slices.diff(dim=1).abs().mean())
    return sum(terms) / len(terms)


def learning_rate(step: int, params: DipParams) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then exponential decay
    with half-life ``lr_half_life`` steps. Depends on the step alone (resume / online safe)."""
    warm = 1.0 if params.warmup_steps == 0 else min(1.0, (step + 1) / params.warmup_steps)
    return params.lr * warm * math.pow(0.5, step / params.lr_half_life)
