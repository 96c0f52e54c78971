"""Plain records of the monitor's state (no Qt, no threads): configuration, what to draw, status.

They are produced by :class:`~tiltstream.viz.model.ViewModel` and consumed by the widgets, the
exporters and the tests.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = ["TRACE_LABELS", "LOSS_WORDS", "ModelConfig", "ViewData", "FrameView", "CoverageData", "Status",
           "RateMeter", "SeqGaps"]

#: Metric name -> (plot group, label); other metrics whose name mentions a loss or a held-out score
#: are plotted in the "loss" group under their own name.
TRACE_LABELS: dict[str, tuple[str, str]] = {
    "sirt_residual": ("loss", "SIRT residual"),
    "temperature_C": ("temperature", "temperature (°C)"),
    "dose_e_per_A2": ("dose", "dose (e⁻/Å²)"),
}
LOSS_WORDS = ("loss", "heldout", "held_out", "dip")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Bounds and thresholds of the view model.

    history_volumes, history_bytes : ring-buffer bounds of the volume history (count, bytes).
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
    message, level : a sentence for the operator and its severity (``"ok"``, ``"info"``, ``"warn"``,
        ``"error"``).
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

    def clear(self) -> None:
        self._samples.clear()


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
