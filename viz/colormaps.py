"""Colormaps as 256-entry RGB lookup tables, without Qt.

The monitor's panels and its exported movies use the same tables, so a GIF looks like the screen.
The perceptually uniform maps are the matplotlib ones by Nathaniel J. Smith, Stefan van der Walt and
Eric Firing (CC0), sampled at 33 anchors and interpolated linearly (differences from the 256-entry
originals are below one 8-bit step in most entries).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["COLORMAPS", "DEFAULT_COLORMAP", "lut", "anchors"]

_ANCHORS_HEX: dict[str, str] = {
    "viridis": (
        "440154 470d60 48186a 482374 472d7b 453781 424086 3e4989 3b528b 375b8d 33638d 2f6b8e 2c728e "
        "297a8e 26828e 23898e 21918c 1f978b 1f9f88 21a685 27ad81 31b57b 3dbc74 4cc26c 5cc863 6ece58 "
        "81d34d 95d840 aadc32 c0df25 d5e21a eae51a fde725"
    ),
    "inferno": (
        "000004 040312 0b0724 150b37 210c4a 2f0a5b 3d0965 4a0c6b 57106e 64156e 71196e 7d1e6d 8a226a "
        "972766 a32c61 b0315b bc3754 c63d4d d04545 da4e3c e35933 eb6429 f1711f f67e14 f98c0a fb9b06 "
        "fcaa0f fbba1f f9c932 f5d949 f2e865 f3f586 fcffa4"
    ),
    "magma": (
        "000004 030312 0a0822 130d34 1d1147 29115a 36106b 440f76 51127c 5d177f 6a1c81 762181 832681 "
        "902a81 9c2e7f aa337d b73779 c23b75 cf4070 db476a e55064 ee5b5e f4695c f9785d fb8761 fd9668 "
        "fea571 feb47b fec287 fed194 fde0a1 fceeb0 fcfdbf"
    ),
    "cividis": (
        "00204d 00265a 002c69 00306f 06366e 1f3c6d 2d426c 38486b 414d6b 4a536b 52596c 595f6d 61646f "
        "686a71 6f7073 767676 7d7c78 848179 8b8779 938e78 9b9477 a39a76 aca174 b4a872 bcaf6f c5b56c "
        "cebc68 d7c463 e0cb5e e9d358 f2da50 fbe248 ffea46"
    ),
    "gray": "000000 ffffff",
}

#: Colormap names the monitor offers, the default first.
COLORMAPS: tuple[str, ...] = ("gray", "viridis", "inferno", "magma", "cividis")
DEFAULT_COLORMAP = "gray"


def anchors(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (K,) in [0, 1], colors (K, 3) uint8)`` of colormap ``name``."""
    try:
        text = _ANCHORS_HEX[name]
    except KeyError:
        raise ValueError(f"colormap: expected one of {', '.join(COLORMAPS)}, got {name!r}") from None
    colors = np.array([[int(h[i:i + 2], 16) for i in (0, 2, 4)] for h in text.split()], dtype=np.uint8)
    return np.linspace(0.0, 1.0, len(colors)), colors


@lru_cache(maxsize=None)
def lut(name: str) -> np.ndarray:
    """The (256, 3) uint8 RGB lookup table of colormap ``name`` (read-only, cached)."""
    pos, colors = anchors(name)
    x = np.linspace(0.0, 1.0, 256)
    table = np.stack([np.interp(x, pos, colors[:, c].astype(float)) for c in range(3)], axis=1)
    out = np.round(table).astype(np.uint8)
    out.flags.writeable = False
    return out
