"""Quality scores of reconstructions against a ground truth (e.g. a simulated phantom's)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

__all__ = ["nrmse", "nrmse_over_time"]


def nrmse(x: np.ndarray, ref: np.ndarray) -> float:
    """Normalised root-mean-square error ‖x − ref‖ / ‖ref‖ (0 is perfect); same shapes required."""
    x, ref = np.asarray(x), np.asarray(ref)
    if x.shape != ref.shape:
        raise ValueError(f"nrmse: expected the reference's shape {ref.shape}, got {x.shape}")
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def nrmse_over_time(volumes: Sequence[np.ndarray] | np.ndarray, times_s: Sequence[float] | np.ndarray,
                    truth: Callable[[float], np.ndarray]) -> list[float]:
    """NRMSE of each volume (Z, Y, X) against ``truth(t_s)`` at its time (s)."""
    if len(volumes) != len(times_s):
        raise ValueError(f"expected one time per volume ({len(volumes)}), got {len(times_s)}")
    return [nrmse(v, truth(float(t))) for v, t in zip(volumes, times_s)]
