"""SIRT: simultaneous iterative reconstruction with positivity, support, warm start and callbacks.

    x ← clip(x + C·Aᵀ·R·(y − A·x))      R = 1 / (A·1),  C = 1 / (Aᵀ·1)

``sirt(A, y, 30)`` equals three chained ``sirt(A, y, 10, x_init=...)`` calls (warm-start contract).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tiltstream.recon.projector import Projector, TorchProjector

__all__ = ["sirt", "SirtState", "sirt_weights"]

log = logging.getLogger(__name__)


@dataclass
class SirtState:
    """What a callback sees after each iteration.

    ``iteration`` counts from 1; ``residual`` is ‖y − A·x‖₂ of the iterate *before* the update
    (free to compute); :meth:`volume` materialises the current (Z, Y, X) estimate (costs a copy).
    """

    iteration: int
    residual: float
    _x: torch.Tensor
    _to_volume: Callable[[torch.Tensor], torch.Tensor]

    def volume(self) -> np.ndarray:
        return self._to_volume(self._x).cpu().numpy()


class _Ops:
    """Forward/adjoint in whatever layout is cheapest for the backend."""

    def __init__(self, A: Projector):
        self.A = A
        self.flat = isinstance(A, TorchProjector)

    def vol_in(self, x: torch.Tensor) -> torch.Tensor:
        return self.A.to_flat_volume(x) if self.flat else x

    def vol_out(self, x: torch.Tensor) -> torch.Tensor:
        return self.A.from_flat_volume(x) if self.flat else x

    def proj_in(self, y: torch.Tensor) -> torch.Tensor:
        return self.A.to_flat_proj(y) if self.flat else y

    def fwd(self, x: torch.Tensor) -> torch.Tensor:
        return self.A.flat_forward(x) if self.flat else self.A._forward_impl(x)

    def adj(self, y: torch.Tensor) -> torch.Tensor:
        return self.A.flat_adjoint(y) if self.flat else self.A._adjoint_impl(y)


def _inverse(t: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return torch.where(t > eps, 1.0 / t.clamp(min=eps), torch.zeros((), dtype=t.dtype, device=t.device))


def sirt_weights(A: Projector) -> tuple[torch.Tensor, torch.Tensor]:
    """(R, C) in the solver's layout: inverse row sums and inverse column sums (0 where a sum is 0)."""
    ops = _Ops(A)
    nz, ny, nx = A.domain_shape
    ones_v = ops.vol_in(torch.ones(A.domain_shape, device=A.device, dtype=A.dtype))
    ones_p = ops.proj_in(torch.ones(A.range_shape, device=A.device, dtype=A.dtype))
    return _inverse(ops.fwd(ones_v)), _inverse(ops.adj(ones_p))


def _as_tensor(a: Any, A: Projector, shape: tuple[int, ...], what: str) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(a) if not isinstance(a, torch.Tensor) else a)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(t.shape)}")
    return t.to(device=A.device, dtype=A.dtype)


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
) -> Any:
    """Reconstruct a (Z, Y, X) volume from projections ``y`` (N, Y, U).

    Parameters
    ----------
    A : the projector.
    y : measured projections; numpy in → numpy out, torch in → torch out.
    num_iterations : SIRT iterations.
    x_init : warm start (Z, Y, X); zeros by default.
    min_value, max_value : box constraint after every update (positivity by default; None = off).
    support : optional (Z, Y, X) boolean mask; voxels outside stay zero.
    callbacks : called with a :class:`SirtState` after every iteration; returning True stops early.
    weights : precomputed :func:`sirt_weights` (reuse them across calls with the same operator).
    """
    if num_iterations < 0:
        raise ValueError(f"num_iterations: expected ≥ 0, got {num_iterations}")
    is_numpy = not isinstance(y, torch.Tensor)
    ops = _Ops(A)
    yt = ops.proj_in(_as_tensor(y, A, A.range_shape, "projections"))
    if x_init is None:
        x = ops.vol_in(torch.zeros(A.domain_shape, device=A.device, dtype=A.dtype))
    else:
        x = ops.vol_in(_as_tensor(x_init, A, A.domain_shape, "x_init").clone())
    mask = None
    if support is not None:
        mask = ops.vol_in(_as_tensor(np.asarray(support, dtype=bool) if not isinstance(support, torch.Tensor)
                                     else support, A, A.domain_shape, "support").to(A.dtype))
    R, C = weights if weights is not None else sirt_weights(A)
    if mask is not None:
        C = C * mask
        x = x * mask
    callbacks = tuple(callbacks)
    with torch.no_grad():
        for k in range(1, num_iterations + 1):
            r = yt - ops.fwd(x)
            res = float(torch.linalg.vector_norm(r)) if callbacks else float("nan")
            x.add_(C * ops.adj(r.mul_(R)))
            if min_value is not None or max_value is not None:
                x.clamp_(min=min_value, max=max_value)
            if callbacks:
                state = SirtState(k, res, x, ops.vol_out)
                if any([bool(cb(state)) for cb in callbacks]):
                    log.debug("SIRT stopped by a callback after %d iterations", k)
                    break
    out = ops.vol_out(x)
    return out.cpu().numpy() if is_numpy else out
