"""Dask overhead per live frame: the streaming SIRT on slab actors vs in one process.

    python benchmarks/bench_live_scale.py [--size 64] [--frames 160] [--workers 1,2] [--device cpu]

An s³ volume from s×s frames (random positive, golden-ratio angles over ±70°; timing does not depend on
the content), the default live settings (64-frame window, 8-frame subsets, 1 step per update). Per
frame, after the window has filled: ``add_frame`` + ``update`` (what the engine does per frame; with
actors one round trip) and the three orthogonal slices the engine publishes after every update
(``slices``), in one process on one torch thread, then through :class:`SlabbedSirt` on a LocalCluster
of N worker processes (1 thread each, one slab actor per worker). The overhead is the difference of
the medians. The final volumes are compared (max relative difference).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import time

import numpy as np
import torch


def make_series(size: int, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    golden = np.mod(np.arange(frames) * 0.6180339887 * 140.0, 140.0) - 70.0
    return rng.random((frames, size, size), dtype=np.float32), golden, np.arange(frames, dtype=np.float64)


def run(est, series, warm: int) -> tuple[list[float], list[float]]:
    """Per-frame seconds of add_frame + update, and of the published slices, after ``warm`` frames."""
    frames, angles, times = series
    nz, ny, nx = est.vol_shape
    index = (nz // 2, ny // 2, nx // 2)
    update, slices = [], []
    for i in range(len(frames)):
        t0 = time.perf_counter()
        est.add_frame(frames[i], angles[i], times[i], seq=i)
        est.update(steps=1)
        t1 = time.perf_counter()
        est.slices(index)
        t2 = time.perf_counter()
        if i >= warm:
            update.append(t1 - t0)
            slices.append(t2 - t1)
    return update, slices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--workers", default="1,2", help="cluster sizes (worker processes), comma-separated")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import distributed

    from tiltstream.recon.live_slabs import SlabbedSirt
    from tiltstream.recon.streaming import StreamingParams, StreamingSirt

    torch.set_num_threads(1)
    params = StreamingParams()
    series = make_series(args.size, args.frames)
    shape = (args.size,) * 3
    warm = params.window_frames
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"torch {torch.__version__}, distributed {distributed.__version__}; {args.size}³, {args.frames} frames, "
          f"window {params.window_frames}, subset {params.subset_size}; medians over the last {args.frames - warm} frames")
    one = StreamingSirt(shape, params, device=args.device)
    u1, s1 = run(one, series, warm)
    ref = one.volume()
    print(f"| one process | {1e3 * np.median(u1):.1f} | {1e3 * np.percentile(u1, 90):.1f} | {1e3 * np.median(s1):.2f} "
          "| – | – | – |")
    for n in (int(v) for v in args.workers.split(",")):
        with distributed.LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0",
                                      silence_logs=logging.ERROR) as cluster, distributed.Client(cluster) as client:
            client.wait_for_workers(n, timeout=120)
            est = SlabbedSirt(client, shape, params, device=args.device)
            un, sn = run(est, series, warm)
            diff = float(np.abs(est.volume() - ref).max() / np.abs(ref).max())
            est.close()
        print(f"| {n} actor(s) | {1e3 * np.median(un):.1f} | {1e3 * np.percentile(un, 90):.1f} | "
              f"{1e3 * np.median(sn):.2f} | {1e3 * (np.median(un) - np.median(u1)):+.1f} | "
              f"{1e3 * (np.median(sn) - np.median(s1)):+.2f} | {diff:.1e} |")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
