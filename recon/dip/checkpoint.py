"""DIP checkpoints: one torch file with everything needed to continue a fit exactly, plus the best
model by held-out score (which :func:`load_generator` turns back into a queryable model).

Contents (format ``"tiltstream.dip/1"``): parameters, generator geometry, a digest of the data,
step, current and best weights, optimiser, sampler (RNG) state, per-frame shifts, histories.
Written atomically (temporary file + rename), so a killed run leaves the previous checkpoint intact.
Loaded with ``weights_only=True``: a checkpoint cannot run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tiltstream.recon.dip.model import DipGeometry, SpaceTimeGenerator
from tiltstream.recon.dip.params import DipParams

__all__ = ["FORMAT", "save_checkpoint", "read_checkpoint", "load_generator"]

FORMAT = "tiltstream.dip/1"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write ``state`` (see the module docstring) to ``path`` atomically."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    torch.save({"format": FORMAT, **state}, tmp)
    os.replace(tmp, p)


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's dictionary; fails with a message naming the file and what is wrong."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such DIP checkpoint")
    try:
        state = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"{p}: expected a tiltstream DIP checkpoint, could not read it ({exc})") from exc
    fmt = state.get("format") if isinstance(state, dict) else None
    if fmt != FORMAT:
        raise ValueError(f"{p}: expected a checkpoint of format {FORMAT!r}, got {fmt!r}")
    return state


def geometry_from_state(state: dict[str, Any]) -> DipGeometry:
    g = state["geometry"]
    return DipGeometry(tuple(g["shape"]), tuple(g["t_range_s"]), float(g["value_scale"]))


def load_generator(path: str | os.PathLike, *, which: str = "best",
                   device: str | torch.device = "cpu") -> SpaceTimeGenerator:
    """The generator stored in a checkpoint (``which="best"`` by held-out score, or ``"last"``: the
    latest, weight-averaged if the fit averages), in eval mode on ``device``; query it with
    ``.volume(t_s)``."""
    if which not in ("best", "last"):
        raise ValueError(f"which: expected 'best' or 'last', got {which!r}")
    state = read_checkpoint(path)
    params = DipParams.from_dict(state["params"])
    model = SpaceTimeGenerator(geometry_from_state(state), params)
    last = state["ema_model"] if state.get("ema_model") is not None else state["model"]
    model.load_state_dict(state["best_model"] if which == "best" else last)
    return model.to(device).eval()
