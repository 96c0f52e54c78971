"""Plain records of the monitor's state (no Qt, no threads): configuration, what to draw, status.

They are produced by :class:`~tiltstream.viz.model.ViewModel` and consumed by the widgets, the
exporters and the tests.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

__all__ = ["TRACE_LABELS", "LOSS_WORDS", "SOURCES", "trace_group", "ModelConfig", "ViewData", "FrameView", "CoverageData", "Status",
           "RateMeter", "SeqGaps"]

#: Metric name -> (plot group, label). Other metrics whose name mentions a loss, residual or
#: held-out score are plotted under their own name in the "loss" group. Of the DIP's metrics
#: (``dip_*``) only held-out scores are plotted, in the "dip" group (the loss plot's right axis):
#: its training loss is on an arbitrary scale and flatters the model; steps, frames and speed are
#: counters, not scores.
TRACE_LABELS: dict[str, tuple[str, str]] = {
    "sirt_residual": ("loss", "SIRT residual"),
    "sirt_predict_nrmse": ("loss", "SIRT next-frame NRMSE"),
    "change_sigma": ("change", "new frame vs model (σ)"),
    "dip_heldout_nrmse": ("dip", "DIP held-out NRMSE"),
    "temperature_C": ("temperature", "temperature (°C)"),
    "dose_e_per_A2": ("dose", "dose (e⁻/Å²)"),
}
LOSS_WORDS = ("loss", "heldout", "held_out", "residual", "nrmse")

#: The reconstructions the monitor can show: the streaming SIRT (its live slices and published
#: volumes, and any other non-DIP source) and the DIP's 4-D estimates (``volume/1`` with
#: ``source="dip"``).
SOURCES = ("sirt", "dip")


def trace_group(name: str) -> str | None:
    """The plot group of metric ``name`` (``"loss"``, ``"dip"``, ``"change"``, ``"temperature"``,
    ``"dose"``), or None."""
    if name in TRACE_LABELS:
        return TRACE_LABELS[name][0]
    low = name.lower()
    if low.startswith("dip_"):
        return "dip" if ("heldout" in low or "held_out" in low) else None
    return "loss" if any(w in low for w in LOSS_WORDS) else None


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Bounds and thresholds of the view model.

    history_volumes, history_bytes : ring-buffer bounds of the volume history (count, bytes).
    dip_volumes, dip_bytes : bounds of the DIP estimate's volumes (count, bytes).
    trace_points, coverage_points : most points kept per trace and tilt angles kept for coverage.
    low_pct, high_pct : auto-levels percentiles.
    stall_after_s : no new frame for this long (wall s) while a series runs: say the stream stopped.
    silent_after_s : no message at all from the reconstruction service for this long: say so (the
        service re-sends its state every few seconds while idle, so silence means it is gone).
    notice_s : how long transient notices (new series) stay on the status line, s.
    rate_window_s : frames/s and display fps are averaged over this many seconds.
    """

    history_volumes: int = 64
    history_bytes: int = 1 << 30
    dip_volumes: int = 64
    dip_bytes: int = 1 << 28
    trace_points: int = 20000
    coverage_points: int = 20000
    low_pct: float = 0.5
    high_pct: float = 99.5
    stall_after_s: float = 5.0
    silent_after_s: float = 8.0
    notice_s: float = 10.0
    rate_window_s: float = 5.0


@dataclass(frozen=True)
class ViewData:
    """Three slices ready to draw.

    xy (Y, X), xz (Z, X), yz (Z, Y) : float32 slices (may alias reused buffers: draw, do not keep).
    index : (z, y, x) of the cut in the slices' own grid.
    scale : (z, y, x) reference-grid voxels per slice pixel.
    crosshair : (z, y, x) on the reference grid.
    slab : planes averaged.
    live : True for the service's live slices, False for a cut of a history volume.
    seq, t_s, source : of the displayed data.
    received_s : monotonic time it arrived.
    key : changes whenever what is drawn changes (cheap redraw test).
    n_frames_used : frames that went into the shown volume (None for live slices).
    position : (i, n): the shown volume is the i-th (from 1) of the n the time slider covers.
    """

    xy: np.ndarray
    xz: np.ndarray
    yz: np.ndarray
    index: tuple[int, int, int]
    scale: tuple[float, float, float]
    crosshair: tuple[int, int, int]
    slab: int
    live: bool
    seq: int
    t_s: float
    source: str
    received_s: float
    key: tuple
    n_frames_used: int | None = None
    position: tuple[int, int] | None = None


@dataclass(frozen=True)
class FrameView:
    """The latest raw frame: data (Y, U), angle (degrees), time (s), seq, cumulative dose (e⁻/Å²),
    temperature (°C); ``received_s`` monotonic arrival time."""

    data: np.ndarray
    seq: int
    angle_deg: float
    t_s: float
    dose_e_per_A2: float | None
    temperature_C: float | None
    received_s: float


@dataclass(frozen=True)
class CoverageData:
    """Tilt angles received so far, for the polar plot.

    angles_deg : (N,) in arrival order (the last is the newest).
    in_window : (N,) True for the frames in the reconstruction's current window (the last
        ``window_frames`` when the service reports it, else all).
    newest_deg : the newest angle, or None.
    tilt_range_deg : (lo, hi) of the scheme when known, else the range of the angles seen.
    wedge_deg : angle sectors in [-90, 90] outside the tilt range (the missing wedge).
    max_gap_deg : largest angular gap between the in-window angles (range ends included).
    frames_total : frames the service has seen (may exceed N for a monitor that joined late).
    """

    angles_deg: np.ndarray
    in_window: np.ndarray
    newest_deg: float | None
    tilt_range_deg: tuple[float, float] | None
    wedge_deg: tuple[tuple[float, float], ...]
    max_gap_deg: float | None
    frames_total: int | None

    @classmethod
    def from_angles(cls, angles: np.ndarray, *, window_frames: float | None = None,
                    tilt_range_deg: tuple[float, float] | None = None,
                    frames_total: float | None = None) -> CoverageData:
        """Coverage of ``angles`` (degrees, arrival order): the last ``window_frames`` are in the
        window; the wedge and the gap are taken within ``tilt_range_deg`` (default: the angles' range)."""
        n = angles.size
        in_window = np.ones(n, dtype=bool)
        if window_frames is not None and 0 < window_frames < n:
            in_window[: n - int(window_frames)] = False
        rng = tilt_range_deg
        if rng is None and n:
            rng = (float(angles.min()), float(angles.max()))
        wedge: list[tuple[float, float]] = []
        gap = None
        if rng is not None:
            lo, hi = max(-90.0, min(rng)), min(90.0, max(rng))
            if lo > -90.0:
                wedge.append((-90.0, lo))
            if hi < 90.0:
                wedge.append((hi, 90.0))
            inside = np.sort(angles[in_window])
            if inside.size:
                edges = np.concatenate([[lo], np.clip(inside, lo, hi), [hi]])
                gap = float(np.max(np.diff(edges)))
        return cls(angles_deg=angles, in_window=in_window, newest_deg=float(angles[-1]) if n else None,
                   tilt_range_deg=rng, wedge_deg=tuple(wedge), max_gap_deg=gap,
                   frames_total=None if frames_total is None else int(frames_total))


@dataclass(frozen=True)
class Status:
    """The status line.

    state : ``"waiting"`` (nothing yet), ``"live"``, ``"stalled"`` (no new frames), ``"silent"``
        (the service stopped publishing) or ``"ended"`` (end/1 seen).
    frames_per_s : frames arriving per second (wall clock), None before two observations.
    display_fps : panel refreshes per second.
    latency_s : frame received by the service → estimate updated, as the service reports it.
    end_to_end_s : ``latency_s`` plus the time from the viewer receiving those slices to drawing them.
    frames_dropped : frames lost on the viewer path (seq gaps on the frame socket).
    updates_dropped : reconstruction updates lost on the viewer path (seq gaps in slices).
    rejected : messages the viewer's sockets rejected as invalid.
    service_rejects : what the reconstruction service rejected, reason -> count (from its
        ``metrics/1``: invalid messages, foreign senders, frames without start/1, over budget, ...).
    message, level : a sentence for the operator and its severity (``"ok"``, ``"info"``, ``"warn"``,
        ``"error"``).
    source : the reconstruction shown (``"sirt"`` or ``"dip"``, see :data:`SOURCES`).
    dip_available : a DIP estimate has arrived in this series (the source can be switched).
    dip_frames, dip_steps : frames the newest DIP estimate was fitted to, training steps so far.
    dip_heldout_nrmse : its held-out score (NRMSE of the frames it never fitted; lower is better).
    dip_age_s : wall seconds since the newest DIP estimate arrived.
    """

    recon_endpoint: str | None
    frames_endpoint: str | None
    state: str
    series_id: str | None
    frames_per_s: float | None
    display_fps: float | None
    latency_s: float | None
    end_to_end_s: float | None
    frames_seen: int | None
    frames_dropped: int
    updates_dropped: int
    rejected: int
    message: str
    level: str
    source: str = "sirt"
    dip_available: bool = False
    dip_frames: int | None = None
    dip_steps: int | None = None
    dip_heldout_nrmse: float | None = None
    dip_age_s: float | None = None
    service_rejects: dict[str, int] = field(default_factory=dict)

    def service_rejected(self) -> str:
        """E.g. ``"service rejected 3 (foreign_sender 2, garbage 1)"``; empty when nothing was."""
        if not self.service_rejects:
            return ""
        total = sum(self.service_rejects.values())
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(self.service_rejects.items(), key=lambda kv: -kv[1]))
        return f"service rejected {total} ({reasons})"

    def dip_progress(self, bold: Callable[[str], str] = str, age: str = ", {:.0f} s ago") -> str:
        """E.g. ``"DIP 240 frames fitted, held-out NRMSE 0.123, 4 s ago"`` (needs ``dip_frames``); the
        numbers through ``bold``, the age in seconds through the format ``age`` (for the rich-text line)."""
        text = f"DIP {bold(str(self.dip_frames))} frames fitted"
        if self.dip_heldout_nrmse is not None:
            text += f", held-out NRMSE {bold(f'{self.dip_heldout_nrmse:.3f}')}"
        if self.dip_age_s is not None:
            text += age.format(self.dip_age_s)
        return text

    def summary(self) -> str:
        """One line of text, e.g. for logs and headless runs."""
        def num(v: float | None, fmt: str) -> str:
            return "–" if v is None else format(v, fmt)

        parts = [
            f"recon {self.recon_endpoint or '–'}",
            f"series {self.series_id[:8] if self.series_id else '–'}",
            f"{num(self.frames_per_s, '.1f')} frames/s in",
            f"display {num(self.display_fps, '.0f')} fps",
            f"latency {num(None if self.end_to_end_s is None else 1e3 * self.end_to_end_s, '.0f')} ms",
            f"dropped {self.frames_dropped}",
        ]
        if self.service_rejects:
            parts.append(self.service_rejected())
        if self.dip_available or self.dip_frames is not None:
            parts.append(f"showing {'DIP' if self.source == 'dip' else 'SIRT live'}")
            if self.dip_frames is not None:
                parts.append(self.dip_progress())
        if self.message:
            parts.append(self.message)
        return " | ".join(parts)


class RateMeter:
    """Events (or a count's increase) per second over a sliding wall-clock window."""

    def __init__(self, window_s: float) -> None:
        self.window_s = float(window_s)
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, count: float) -> None:
        self._samples.append((now, count))
        while len(self._samples) > 2 and now - self._samples[1][0] > self.window_s:
            self._samples.popleft()

    def rate(self, now: float) -> float | None:
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        span = max(now, t1) - t0
        if now - t1 > self.window_s:
            return 0.0
        return (c1 - c0) / span if span > 0 else None


class SeqGaps:
    """Counts seqs skipped within one series after the first one seen (a late join is no loss)."""

    def __init__(self) -> None:
        self.last: int | None = None
        self.missing = 0
        self.last_gap_s = -math.inf

    def observe(self, seq: int, now: float) -> None:
        if self.last is not None and seq > self.last + 1:
            self.missing += seq - self.last - 1
            self.last_gap_s = now
        if self.last is None or seq > self.last:
            self.last = seq
