"""SIRT: simultaneous iterative reconstruction with positivity, support, warm start and callbacks.

    x ← clip(x + C ⊙ Σ_{i∈S} w_i A_iᵀ R_i (y_i − A_i x)),   R_i = 1 / (A_i·1),  C = λ / Σ_{i∈S} w_i A_iᵀ·1

:func:`sirt_step` is that one step over any weighted set of blocks (a whole series, an ordered
subset ``A[idx]`` of it, or single frames); batch, windowed, 4-D and streaming SIRT all run it.
``sirt(A, y, 30)`` equals three chained ``sirt(A, y, 10, x_init=...)`` calls (warm-start contract).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tiltstream.recon.projector import Projector

__all__ = ["Block", "SirtState", "inverse", "sirt", "sirt_step", "sirt_weights"]

log = logging.getLogger(__name__)


@dataclass
class SirtState:
    """What a callback sees after each iteration.

    ``iteration`` counts from 1; ``residual`` is ‖y − A·x‖₂ of the iterates the iteration's steps
    started from (free to compute); :meth:`volume` materialises the current (Z, Y, X) estimate
    (costs a copy).
    """

    iteration: int
    residual: float
    _x: torch.Tensor
    _to_volume: Callable[[torch.Tensor], torch.Tensor]

    def volume(self) -> np.ndarray:
        return self._to_volume(self._x).cpu().numpy()


@dataclass
class Block:
    """One weighted term of a SIRT step: operator ``A``, data ``y`` and inverse row sums ``R``, the
    last two in ``A``'s flat (solver) layout."""

    A: Projector
    y: torch.Tensor
    R: torch.Tensor
    weight: float = 1.0

    @classmethod
    def of(cls, A: Projector, y: torch.Tensor, weight: float = 1.0) -> "Block":
        """The block of projections ``y`` (N, Y, U) through ``A``."""
        return cls(A, A.to_flat_proj(y), inverse(A.flat_forward(A.flat_ones(domain=True))), weight)

    def column_sums(self) -> torch.Tensor:
        """Aᵀ·1 in the flat layout (unweighted)."""
        return self.A.flat_adjoint(self.A.flat_ones(domain=False))


def inverse(t: torch.Tensor, eps: float = 1e-6, scale: float = 1.0) -> torch.Tensor:
    """``scale / t`` where ``t > eps``, else 0 (rays or voxels that nothing reaches)."""
    return torch.where(t > eps, scale / t.clamp(min=eps), torch.zeros((), dtype=t.dtype, device=t.device))


def sirt_step(
    x: torch.Tensor,
    blocks: Sequence[Block],
    C: torch.Tensor,
    *,
    min_value: float | None = 0.0,
    max_value: float | None = None,
    measure: bool = False,
) -> tuple[float, float]:
    """One SIRT step over ``blocks``, in place on the flat estimate ``x``.

    ``C`` is λ / Σ w_i A_iᵀ·1 (:func:`inverse` of the weighted column sums). With ``measure``,
    returns (Σ‖y_i − A_i x‖², Σ‖y_i‖²) of the iterate before the step; else (nan, nan).
    """
    acc: torch.Tensor | None = None
    res2 = norm2 = 0.0 if measure else float("nan")
    for b in blocks:
        r = b.y - b.A.flat_forward(x)
        if measure:
            res2 += float(torch.sum(r * r))
            norm2 += float(torch.sum(b.y * b.y))
        r.mul_(b.R)
        if acc is None:  # the first term makes the sum's volume; the others add into it in place
            acc = b.A.flat_adjoint(r)
            if b.weight != 1.0:
                acc.mul_(b.weight)
        else:
            b.A.flat_adjoint_add(acc, r, alpha=b.weight)
    if acc is None:
        return res2, norm2
    x.add_(acc.mul_(C))
    if min_value is not None or max_value is not None:
        x.clamp_(min=min_value, max=max_value)
    return res2, norm2


def sirt_weights(A: Projector) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, C) in the solver layout: inverse row sums and inverse column sums (0 where a sum is 0)."""
    block = Block.of(A, torch.zeros(A.range_shape, device=A.device, dtype=A.dtype))
    return block.R, inverse(block.column_sums())


def _as_tensor(a: Any, A: Projector, shape: tuple[int, ...], what: str) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(a) if not isinstance(a, torch.Tensor) else a)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t.to(device=A.device, dtype=A.dtype)


def _subset_indices(subsets: Sequence[Any], n: int) -> list[np.ndarray]:
    out = [np.atleast_1d(np.arange(n)[np.asarray(s)]) for s in subsets]
    if not out or any(s.size == 0 for s in out):
        raise ValueError(f"subsets: expected non-empty index sets into {n} frames, got {[s.size for s in out]} sizes")
    return out


def sirt(
    A: Projector,
    y: Any,
    num_iterations: int,
    *,
    x_init: Any = None,
    min_value: float | None = 0.0,
    max_value: float | None = None,
    support: Any = None,
    callbacks: Iterable[Callable[[SirtState], bool | None]] = (),
    weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    subsets: Sequence[Any] | None = None,
    relaxation: float = 1.0,
) -> Any:
    """Reconstruct a (Z, Y, X) volume from projections ``y`` (N, Y, U).

    Parameters
    ----------
    A : the projector.
    y : measured projections; numpy in → numpy out, torch in → torch out.
    num_iterations : SIRT iterations (with ``subsets``: passes over all subsets).
    x_init : warm start (Z, Y, X); zeros by default.
    min_value, max_value : box constraint after every update (positivity by default; None = off).
    support : optional (Z, Y, X) boolean mask; voxels outside stay zero.
    callbacks : called with a :class:`SirtState` after every iteration; returning True stops early.
    weights : precomputed :func:`sirt_weights` (reuse them across calls with the same operator).
    subsets : ordered subsets (index arrays into the frames): each iteration runs one
        :func:`sirt_step` per subset, in this order, through ``A[subset]`` (OS-SIRT).
    relaxation : λ, 0 < λ < 2 (scales every step).
    """
    if num_iterations < 0:
        raise ValueError(f"num_iterations: expected ≥ 0, got {num_iterations}")
    if not 0.0 < relaxation < 2.0:
        raise ValueError(f"relaxation: expected 0 < λ < 2, got {relaxation}")
    if subsets is not None and weights is not None:
        raise ValueError("weights: precomputed weights are for the whole operator, not for subsets")
    is_numpy = not isinstance(y, torch.Tensor)
    yt = _as_tensor(y, A, A.range_shape, "projections")
    if x_init is None:
        x = A.to_flat_volume(torch.zeros(A.domain_shape, device=A.device, dtype=A.dtype))
    else:
        x = A.to_flat_volume(_as_tensor(x_init, A, A.domain_shape, "x_init").clone())
    mask = None
    if support is not None:
        mask = A.to_flat_volume(_as_tensor(np.asarray(support, dtype=bool) if not isinstance(support, torch.Tensor)
                                           else support, A, A.domain_shape, "support").to(A.dtype))
        x = x * mask
    if weights is not None:
        steps = [(Block(A, A.to_flat_proj(yt), weights[0]), weights[1] * relaxation)]
    else:
        blocks = ([Block.of(A, yt)] if subsets is None
                  else [Block.of(A[idx], yt[torch.as_tensor(idx, device=yt.device)])
                        for idx in _subset_indices(subsets, A.range_shape[0])])
        steps = [(block, inverse(block.column_sums(), scale=relaxation)) for block in blocks]
    if mask is not None:
        steps = [(block, C * mask) for block, C in steps]
    callbacks = tuple(callbacks)
    with torch.no_grad():
        for k in range(1, num_iterations + 1):
            res2 = 0.0
            for block, C in steps:
                res2 += sirt_step(x, [block], C, min_value=min_value, max_value=max_value, measure=bool(callbacks))[0]
            if callbacks:
                state = SirtState(k, float(np.sqrt(res2)), x, A.from_flat_volume)
                if any([bool(cb(state)) for cb in callbacks]):
                    log.debug("SIRT stopped by a callback after %d iterations", k)
                    break
    out = A.from_flat_volume(x)
    return out.cpu().numpy() if is_numpy else out
