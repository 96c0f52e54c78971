"""Colours and text styling shared by the monitor's panels (no Qt)."""

from __future__ import annotations

__all__ = ["THEME", "html"]

#: Colours of the monitor (dark theme: images read best on black).
THEME = {
    "background": "#121417",
    "panel": "#1b1e23",
    "text": "#d8dce2",
    "dim": "#8a929d",
    "accent": "#ffb000",  # crosshair, newest angle
    "window": "#4fb3ff",  # angles in the reconstruction window
    "sirt": "#4fb3ff",  # the streaming SIRT (live)
    "dip": "#d58cff",  # the DIP estimate
    "old": "#56606d",
    "wedge": "#c0392b",
    "ok": "#3ecf6b",
    "info": "#4fb3ff",
    "warn": "#ffb000",
    "error": "#ff5252",
}


def html(text: str, color: str = THEME["text"], size: str = "9pt", bold: bool = False) -> str:
    """``text`` as a styled HTML span (pyqtgraph labels and Qt labels take rich text)."""
    weight = "600" if bold else "400"
    return f'<span style="color:{color}; font-size:{size}; font-weight:{weight}">{text}</span>'
