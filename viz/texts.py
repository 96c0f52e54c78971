"""What the monitor window's labels say: the status line and the time-slider label (no Qt).

Rich text (HTML) for Qt labels, built from a :class:`~tiltstream.viz.records.Status` and the slider's
position; the Qt widgets only set it (see :mod:`~tiltstream.viz.statusline`, :mod:`~tiltstream.viz.controls`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from tiltstream.viz.records import Status
from tiltstream.viz.theme import THEME

__all__ = ["SOURCE_LABELS", "state_html", "where_html", "numbers_html", "source_html", "message_html",
           "slider_text"]

#: How the reconstructions are named on buttons and in the status line.
SOURCE_LABELS = {"sirt": "SIRT live", "dip": "DIP"}
_DOT = {"live": "ok", "waiting": "warn", "stalled": "warn", "silent": "error", "ended": "info"}
_SEP = " &nbsp;·&nbsp; "


def state_html(st: Status) -> str:
    """A coloured dot and the state, e.g. ``● LIVE``."""
    dot = THEME.get(_DOT.get(st.state, "dim"), THEME["dim"])
    return f"<span style='color:{dot}'>●</span> <b>{st.state.upper()}</b>"


def where_html(st: Status) -> str:
    """What the monitor is connected to, and the series."""
    where = (("recon", st.recon_endpoint), ("frames", st.frames_endpoint), ("series", (st.series_id or "")[:8]))
    return _SEP.join(f"{name} <b>{html.escape(value)}</b>" for name, value in where if value)


def _num(v: float | None, spec: str, unit: str = "") -> str:
    return "–" if v is None else f"{format(v, spec)}{unit}"


def numbers_html(st: Status) -> str:
    """Frame rate, display rate, latency, drops and rejects."""
    lat = None if st.end_to_end_s is None else 1e3 * st.end_to_end_s
    drop_color = THEME["warn"] if st.frames_dropped else THEME["text"]
    numbers = [
        f"in <b>{_num(st.frames_per_s, '.1f')}</b> frames/s",
        f"display <b>{_num(st.display_fps, '.0f')}</b> fps",
        f"latency <b>{_num(lat, '.0f', ' ms')}</b>",
        f"<span style='color:{drop_color}'>dropped <b>{st.frames_dropped}</b> frames</span>"
        + (f"<span style='color:{THEME['dim']}'> ({st.updates_dropped} updates skipped)</span>"
           if st.updates_dropped else ""),
    ]
    if st.rejected:
        numbers.append(f"<span style='color:{THEME['warn']}'>rejected {st.rejected}</span>")
    if st.service_rejects:
        numbers.append(f"<span style='color:{THEME['warn']}'>{st.service_rejected()}</span>")
    return _SEP.join(numbers)


def source_html(st: Status) -> str | None:
    """Which reconstruction is shown and the DIP's progress; None for streams without a DIP."""
    if not (st.dip_available or st.dip_frames is not None):
        return None
    name = SOURCE_LABELS.get(st.source, st.source)
    parts = [f"showing <b style='color:{THEME.get(st.source, THEME['text'])}'>{name}</b>"]
    if st.dip_frames is not None:
        parts.append(st.dip_progress(lambda v: f"<b>{v}</b>", f" <span style='color:{THEME['dim']}'>({{:.0f}} s ago)</span>"))
    return _SEP.join(parts)


def message_html(message: str, level: str) -> str:
    """The status message (plain text: it may quote what a peer sent) in the colour of its level (empty for none)."""
    return f"<span style='color:{THEME.get(level, THEME['text'])}'>{html.escape(message)}</span>" if message else ""


def slider_text(times: Sequence[float], index: int | None, dip: bool) -> tuple[str, str]:
    """(label, tooltip) of the time slider at ``index`` over volumes at ``times`` (s)."""
    tip = ("Time points of the newest DIP estimate; drag to scrub" if dip else
           "History of published volumes (ring buffer); drag to scrub back")
    if index is None:
        return "no volume yet", tip
    n = len(times)
    t = times[index] if index < n else float("nan")
    span = f"{times[0]:.0f}–{times[-1]:.0f} s" if n else ""
    return f"{'DIP ' if dip else ''}t = {t:.1f} s  ({index + 1}/{n}, {span})", tip
