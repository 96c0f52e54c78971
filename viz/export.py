"""Slice movies and orthoview images without Qt: numpy composes, Pillow writes GIFs, ffmpeg MP4s.

:func:`orthoview_rgb` lays out one volume's slices as the monitor does (XY top left, YZ to its
right with Z running right, XZ below), with the same colormaps; :func:`write_movie` writes a list of
such frames as GIF (Pillow) or MP4 (an ``ffmpeg`` executable from ``imageio-ffmpeg`` or the PATH).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tiltstream.viz.colormaps import lut
from tiltstream.viz.history import VolumeEntry
from tiltstream.viz.slicing import cut_slices, grid_index, percentile_levels

__all__ = ["apply_lut", "orthoview_rgb", "history_frames", "write_movie", "ffmpeg_executable", "movie_formats"]

log = logging.getLogger(__name__)

_GAP = 3
_BACKGROUND = (18, 20, 23)


def apply_lut(image: np.ndarray, levels: tuple[float, float], colormap: str = "gray") -> np.ndarray:
    """(H, W) values → (H, W, 3) uint8 RGB: ``levels`` map to the ends of the colormap, clipped."""
    lo, hi = levels
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    idx = np.clip((np.asarray(image, dtype=np.float32) - lo) * scale, 0, 255).astype(np.uint8)
    return lut(colormap)[idx]


def orthoview_rgb(
    volume: np.ndarray,
    index: Sequence[int],
    *,
    slab: int = 1,
    levels: tuple[float, float] | None = None,
    colormap: str = "gray",
    min_height: int = 360,
    label: str | None = None,
    panel_names: bool = True,
) -> np.ndarray:
    """One (H, W, 3) uint8 image of ``volume`` (Z, Y, X) cut at ``index`` (z, y, x).

    Layout: XY (Y down, X right) top left; YZ (Y down, Z right) top right; XZ (Z down, X right)
    bottom left. Small volumes are enlarged by an integer factor to at least ``min_height`` pixels.
    ``levels`` default to the 0.5/99.5 percentiles of the three slices. Panel names and ``label``
    (in the free corner) are written when Pillow is available.
    """
    xy, xz, yz = cut_slices(volume, index, slab)
    if levels is None:
        levels = percentile_levels((xy, xz, yz)) or (0.0, 1.0)
    nz, ny, nx = volume.shape
    f = max(1, -(-(int(min_height) - _GAP) // (ny + nz)))
    canvas = np.empty((f * (ny + nz) + _GAP, f * (nx + nz) + _GAP, 3), dtype=np.uint8)
    canvas[:] = _BACKGROUND

    def put(img: np.ndarray, r: int, c: int) -> None:
        big = np.repeat(np.repeat(apply_lut(img, levels, colormap), f, axis=0), f, axis=1)
        canvas[r:r + big.shape[0], c:c + big.shape[1]] = big

    put(xy, 0, 0)
    put(yz.T, 0, f * nx + _GAP)
    put(xz, f * ny + _GAP, 0)
    texts = [("XY", (4, 2)), ("YZ", (f * nx + _GAP + 4, 2)), ("XZ", (4, f * ny + _GAP + 2))] if panel_names else []
    if label:
        texts.append((label, (f * nx + _GAP + 8, f * ny + _GAP + 8)))
    if texts:
        _draw_labels(canvas, texts)
    return canvas


def _draw_labels(canvas: np.ndarray, texts: list[tuple[str, tuple[int, int]]]) -> None:
    try:
        from PIL import Image, ImageDraw, ImageFont  # noqa: PLC0415
    except ImportError:
        return
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(10, canvas.shape[0] // 28))
    except TypeError:  # Pillow < 10.1: fixed-size bitmap font
        font = ImageFont.load_default()
    for text, xy in texts:
        draw.multiline_text(xy, text, fill=(216, 220, 226), font=font, spacing=4)
    canvas[:] = np.asarray(img)


def history_frames(
    entries: Sequence[VolumeEntry],
    crosshair: Sequence[int],
    reference_shape: Sequence[int],
    *,
    slab: int = 1,
    levels: tuple[float, float] | None = None,
    colormap: str = "gray",
    min_height: int = 360,
) -> list[np.ndarray]:
    """Orthoview frames of every entry, cut at ``crosshair`` (reference-grid voxels).

    One set of ``levels`` holds for the whole movie (default: percentiles over all its slices), so
    brightness changes in the movie are changes in the data.
    """
    if not entries:
        raise ValueError("history is empty: no volumes to export yet")
    cuts = [grid_index(crosshair, e.data.shape, reference_shape) for e in entries]
    if levels is None:
        slices = [s for e, i in zip(entries, cuts) for s in cut_slices(e.data, i, slab)]
        levels = percentile_levels(slices) or (0.0, 1.0)
    return [
        orthoview_rgb(e.data, i, slab=slab, levels=levels, colormap=colormap, min_height=min_height,
                      label=f"t = {e.t_s:.1f} s\n{_what(e)}")
        for e, i in zip(entries, cuts)
    ]


def _what(entry: VolumeEntry) -> str:
    if entry.source == "dip":
        return f"DIP, {entry.n_frames_used} frames"
    return f"{entry.source} #{entry.seq}"


def ffmpeg_executable() -> str | None:
    """Path of an ffmpeg executable (imageio-ffmpeg's bundled one, else ``ffmpeg`` on the PATH) or None."""
    try:
        import imageio_ffmpeg  # noqa: PLC0415

        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except Exception:  # noqa: BLE001 - not installed or no binary for this platform
        return shutil.which("ffmpeg")


def movie_formats() -> tuple[str, ...]:
    """Movie formats that can be written here: ``"gif"`` (needs Pillow) and ``"mp4"`` (needs ffmpeg)."""
    out = []
    try:
        import PIL  # noqa: F401, PLC0415

        out.append("gif")
    except ImportError:
        pass
    if ffmpeg_executable():
        out.append("mp4")
    return tuple(out)


def write_movie(frames: Sequence[np.ndarray], path: str | Path, *, fps: float = 4.0) -> Path:
    """Write (H, W, 3) uint8 ``frames`` to ``path`` (``.gif`` or ``.mp4``); returns the path."""
    path = Path(path)
    if not frames:
        raise ValueError("no frames to write")
    if not fps > 0:
        raise ValueError(f"fps: expected > 0, got {fps}")
    suffix = path.suffix.lower()
    if suffix == ".gif":
        _write_gif(frames, path, fps)
    elif suffix == ".mp4":
        _write_mp4(frames, path, fps)
    else:
        raise ValueError(f"movie file: expected a .gif or .mp4 name, got {path.name!r}")
    log.info("wrote %d frames to %s", len(frames), path)
    return path


def _write_gif(frames: Sequence[np.ndarray], path: Path, fps: float) -> None:
    try:
        from PIL import Image  # noqa: PLC0415
    except ImportError as exc:
        raise RuntimeError("writing GIF needs Pillow: pip install pillow") from exc
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(colors=255, method=Image.Quantize.MEDIANCUT)
              for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0,
                   optimize=False)


def _write_mp4(frames: Sequence[np.ndarray], path: Path, fps: float) -> None:
    exe = ffmpeg_executable()
    if exe is None:
        raise RuntimeError("writing MP4 needs ffmpeg: pip install imageio-ffmpeg (or install ffmpeg); "
                           "GIF export works without it")
    h, w = frames[0].shape[:2]
    h2, w2 = h + h % 2, w + w % 2  # yuv420p needs even sizes
    cmd = [exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w2}x{h2}",
           "-r", f"{fps:g}", "-i", "-", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        for f in frames:
            if f.shape[:2] != (h, w):
                raise ValueError(f"frames: expected every frame {h}×{w}, got {f.shape[0]}×{f.shape[1]}")
            padded = np.zeros((h2, w2, 3), dtype=np.uint8)
            padded[:h, :w] = f
            proc.stdin.write(padded.tobytes())
        proc.stdin.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait(timeout=120) != 0:
            raise RuntimeError(f"ffmpeg failed writing {path}: {err.strip()[-500:]}")
    finally:
        if proc.poll() is None:
            proc.kill()
