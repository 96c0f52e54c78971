"""What the live reconstruction service did: frame counts, update times, latencies, rejects."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["ServiceStats"]


@dataclass
class ServiceStats:
    """What the service did; ``latencies_s`` are receive → estimate-updated times per frame."""

    frames_received: int = 0
    updates: int = 0
    published: int = 0
    series: int = 0
    update_s: list[float] = field(default_factory=list)  # updates that folded in frames (not idle refinement)
    latencies_s: list[float] = field(default_factory=list)
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    frames_rejected_by_engine: int = 0
    dip_estimates: int = 0
    align_shifts_px: list[tuple[float, float]] = field(default_factory=list)  # (dy, du) per update, --align

    def record_update(self, metrics: dict[str, float], latencies_s: list[float]) -> None:
        """One engine update: its metrics/1 values and the latencies of the frames it folded in."""
        self.updates += 1
        if "update_s" in metrics and latencies_s:
            self.update_s.append(metrics["update_s"])
        if "align_du_px" in metrics and latencies_s:  # a frame was aligned
            self.align_shifts_px.append((metrics["align_dy_px"], metrics["align_du_px"]))
        self.latencies_s.extend(latencies_s)

    def summary(self) -> dict[str, float | int]:
        def pct(v: list[float], q: float) -> float:
            return float(np.percentile(v, q)) if v else float("nan")

        return {
            "frames_received": self.frames_received,
            "updates": self.updates,
            "series": self.series,
            "messages_published": self.published,
            "messages_rejected": int(sum(self.rejected_by_reason.values())),
            "frames_rejected": self.frames_rejected_by_engine,
            "dip_estimates": self.dip_estimates,
            "update_ms_p50": 1e3 * pct(self.update_s, 50),
            "latency_ms_p50": 1e3 * pct(self.latencies_s, 50),
            "latency_ms_p99": 1e3 * pct(self.latencies_s, 99),
            **({"align_shift_px_max": float(np.max(np.abs(self.align_shifts_px)))} if self.align_shifts_px else {}),
        }
