"""``tiltstream reconstruct`` and ``tiltstream score``: glue between files, recon and the user."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tiltstream.recon.batch import BatchParams, default_times, reconstruct_4d
from tiltstream.recon.windowed import Window

log = logging.getLogger(__name__)


def _params(args: argparse.Namespace) -> BatchParams:
    window = Window.parse(args.window) if args.window else None
    return BatchParams(
        method=args.method,
        iterations=args.iterations,
        window_frames=None if window is None else window.frames,
        window_seconds=None if window is None else window.seconds,
        axis_offset_px=args.axis_offset,
        vol_z=args.height,
    )


def run(args: argparse.Namespace) -> str:
    """Read, reconstruct at the requested times with a progress bar, write, and return a summary."""
    from tiltstream.stream.readers import read_series  # noqa: PLC0415
    from tiltstream.stream.results import write_result  # noqa: PLC0415

    series = read_series(args.input, tilt_axis_angle_deg=args.tilt_axis_angle)
    params = _params(args)
    times = np.asarray(args.times if args.times else default_times(series.times_s, params.window), dtype=np.float64)
    t0 = time.perf_counter()
    with tqdm(total=len(times), desc=f"{params.method} {series.n_frames} frames", unit="vol",
              disable=None) as bar:
        volumes = reconstruct_4d(series.frames, series.angles_deg, series.times_s, times, params,
                                 device=args.device, progress=bar.update)
    wall = time.perf_counter() - t0
    attrs = {
        "method": params.method,
        "parameters": params.as_dict(),
        "input_path": str(args.input),
        "device": args.device,
        "wall_time_s": wall,
        "voxel_nm": series.pixel_nm if series.pixel_nm is not None else float("nan"),
        "tilt_axis_angle_deg": series.metadata.get("tilt_axis_angle_deg", 0.0),
    }
    write_result(args.out, volumes, times, attrs=attrs, overwrite=True)
    return (f"wrote {len(times)} volume(s) {volumes.shape[1:]} at t = "
            f"{', '.join(f'{t:.1f}' for t in times)} s to {args.out} ({wall:.1f} s)")


def score(result_path: Path, truth_from: Path | None = None) -> str:
    """NRMSE of every volume in a result against the simulation's ground truth at the same times."""
    from tiltstream.simulate import truth_from_recording  # noqa: PLC0415
    from tiltstream.stream.results import read_result  # noqa: PLC0415

    volumes, times, attrs = read_result(result_path)
    source = Path(truth_from) if truth_from is not None else Path(attrs["input_path"])
    truth = truth_from_recording(source)
    lines = [f"{'t (s)':>8}  {'NRMSE':>7}"]
    errs = []
    for vol, t in zip(volumes, times):
        ref = truth(float(t))
        if ref.shape != vol.shape:
            raise ValueError(f"{result_path}: volume shape {vol.shape} does not match the truth {ref.shape}")
        err = float(np.linalg.norm(vol - ref) / np.linalg.norm(ref))
        errs.append(err)
        lines.append(f"{t:8.2f}  {err:7.4f}")
    lines.append(f"{'mean':>8}  {np.mean(errs):7.4f}")
    return "\n".join(lines)
