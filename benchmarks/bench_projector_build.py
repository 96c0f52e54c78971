"""Projector build: time and peak memory to build the strip-model matrix (and its transpose).

    python benchmarks/bench_projector_build.py [--size 256] [--angles 128] [--baseline REV] [--repeats 3]

Builds ``operator(volume_geometry((N, 1, N)), 128 golden-ratio angles)`` (one Y-slice: every slice
shares the matrix) in a fresh process per build, so peak RSS is the build's own. With ``--baseline
REV`` the code at git revision REV is built in the same run, interleaved (see
``bench_sirt_vs_astra.baseline_tree``); medians over ``--repeats``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def child(size: int, angles: int) -> None:
    import torch

    from tiltstream.recon import operator, projection_geometry, volume_geometry
    from tiltstream.sim import tilt_scheme

    ang = tilt_scheme("golden", angles, lo=-70.0, hi=70.0)
    t0 = time.perf_counter()
    A = operator(volume_geometry((size, 1, size)), projection_geometry(ang, det_shape=(1, size)), device="cpu")
    build_s = time.perf_counter() - t0
    print(json.dumps({"build_s": build_s, "nnz": A.nnz, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "threads": torch.get_num_threads()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--angles", type=int, default=128)
    p.add_argument("--baseline", metavar="REV")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.size, args.angles)
    from bench_sirt_vs_astra import baseline_tree

    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": dict(os.environ)}
        if args.baseline:
            trees[f"at {args.baseline}"] = {**os.environ, "PYTHONPATH": str(baseline_tree(args.baseline, Path(tmp)))}
        samples: dict[str, list[dict]] = {k: [] for k in trees}
        for _ in range(args.repeats):
            for label, env in trees.items():
                cmd = [sys.executable, __file__, "--child", "--size", str(args.size), "--angles", str(args.angles)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env, cwd=tmp).stdout
                samples[label].append(json.loads(out.strip().splitlines()[-1]))
                print(label, samples[label][-1], file=sys.stderr)
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU cores; {args.size}² slice, "
          f"{args.angles} angles; median of {args.repeats}\n")
    print("| code | build (s) | peak RSS (MB) | nonzeros |")
    print("|---|---|---|---|")
    for label, runs in samples.items():
        med = {k: float(np.median([r[k] for r in runs])) for k in ("build_s", "peak_rss_mb")}
        print(f"| {label} | {med['build_s']:.2f} | {med['peak_rss_mb']:.0f} | {runs[0]['nnz']} |")


if __name__ == "__main__":
    main()
