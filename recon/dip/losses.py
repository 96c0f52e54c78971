"""Loss terms of the DIP fit: robust data term, Charbonnier total variation, lr schedule."""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from tiltstream.recon.dip.params import DipParams

__all__ = ["data_loss", "tv_3d", "charbonnier", "learning_rate"]


def data_loss(pred: torch.Tensor, meas: torch.Tensor, params: DipParams, data_scale: float) -> torch.Tensor:
    """Mean misfit of predicted vs measured rows, residuals in units of the data's RMS."""
    r = (pred - meas) / data_scale
    if params.loss == "huber":
        return F.huber_loss(r, torch.zeros_like(r), delta=params.huber_delta)
    if params.loss == "l2":
        return 0.5 * (r * r).mean()
    # "poisson": Var(measured) ∝ expected counts; weight squared residuals by 1 / measured (floored)
    w = 1.0 / (meas.clamp(min=0.0) / data_scale + 1.0)
    return 0.5 * (w * r * r).mean()


def charbonnier(d: torch.Tensor, eps: float) -> torch.Tensor:
    """Smooth |d|: sqrt(d² + ε²) − ε (differentiable at 0)."""
    return torch.sqrt(d * d + eps * eps) - eps


def tv_3d(slices: torch.Tensor, eps: float, *, along_rows: bool) -> torch.Tensor:
    """Mean Charbonnier TV of (F, R, Z, X) slices along Z and X, and along R (= Y) if the rows are
    neighbours (whole frames)."""
    terms = [charbonnier(slices.diff(dim=2), eps).mean(), charbonnier(slices.diff(dim=3), eps).mean()]
    if along_rows and slices.shape[1] > 1:
        terms.append(charbonnier(slices.diff(dim=1), eps).mean())
    return sum(terms) / len(terms)


def learning_rate(step: int, params: DipParams) -> float:
    """Learning rate for optimiser step ``step`` (0-based): linear warm-up, then exponential decay
    with half-life ``lr_half_life`` steps. Depends on the step alone (resume / online safe)."""
    warm = 1.0 if params.warmup_steps == 0 else min(1.0, (step + 1) / params.warmup_steps)
    return params.lr * warm * math.pow(0.5, step / params.lr_half_life)
