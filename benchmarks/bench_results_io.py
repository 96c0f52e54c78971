"""Time to write a 4-D result as OME-Zarr vs HDF5, in one run, through tiltstream's one writer.

    python benchmarks/bench_results_io.py [--t 64] [--edge 128] [--repeats 3] [--out-dir DIR]

Writes a (T, edge, edge, edge) float32 result (default 64 × 128³, 512 MiB) with
:func:`tiltstream.stream.results.write_result` to ``result.h5`` (HDF5: one chunk per volume,
uncompressed) and ``result.zarr`` (OME-Zarr via zarr v3 / ome-zarr: one chunk per volume, zarr's
default codec), a volume at a time as a reconstruction does, each file flushed after every volume.
The data is a smooth phantom plus noise (what a reconstruction looks like to a compressor), built
before the clock starts. Reports the best of ``--repeats`` wall times of each, the ratio
zarr/HDF5 and the size on disk. Needs the ``[zarr]`` extra.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tiltstream.stream.results import write_result


def phantom(t: int, edge: int, rng: np.random.Generator) -> np.ndarray:
    """(t, edge³) float32: a growing sphere plus 5 % noise."""
    z, y, x = np.ogrid[:edge, :edge, :edge]
    r2 = ((z - edge / 2) ** 2 + (y - edge / 2) ** 2 + (x - edge / 2) ** 2) / (edge / 2) ** 2
    out = np.empty((t, edge, edge, edge), np.float32)
    for i in range(t):
        out[i] = (r2 < (0.3 + 0.4 * i / max(1, t - 1)) ** 2).astype(np.float32)
        out[i] += rng.normal(0.0, 0.05, out[i].shape).astype(np.float32)
    return out


def size_on_disk(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--t", type=int, default=64)
    ap.add_argument("--edge", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out-dir", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    volumes = phantom(args.t, args.edge, np.random.default_rng(0))
    times = np.arange(args.t, dtype=np.float64) * 2.0
    attrs = {"method": "bench", "parameters": {"edge": args.edge}, "voxel_nm": 0.4}
    work = Path(tempfile.mkdtemp(dir=args.out_dir))
    best: dict[str, float] = {}
    sizes: dict[str, int] = {}
    try:
        for _ in range(args.repeats):
            for name in ("result.h5", "result.zarr"):
                path = work / name
                t0 = time.perf_counter()
                write_result(path, volumes, times, attrs=attrs, overwrite=True)
                os.sync()
                wall = time.perf_counter() - t0
                best[name] = min(best.get(name, float("inf")), wall)
                sizes[name] = size_on_disk(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mib = volumes.nbytes / 2**20
    print(f"{args.t} × {args.edge}³ float32 ({mib:.0f} MiB), best of {args.repeats}, write + sync:")
    for name, wall in best.items():
        print(f"  {name:12s} {wall:6.2f} s  {mib / wall:7.0f} MiB/s  {sizes[name] / 2**20:7.0f} MiB on disk")
    print(f"  ratio OME-Zarr / HDF5: {best['result.zarr'] / best['result.h5']:.2f}")


if __name__ == "__main__":
    main()
