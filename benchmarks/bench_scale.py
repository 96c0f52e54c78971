"""Slab-parallel batch SIRT on dask.distributed: 1 vs 2 workers, peak memory per worker, per-row cost.

    python benchmarks/bench_scale.py [--sizes 128,256] [--iterations 30,10] [--frames 64,128] [--repeats 2]
                                     [--device cpu]

For each size s (an s³ volume from ``frames`` s×s projections over ±70°, golden-ratio order; random
positive frames, since timing does not depend on the content) it measures, in one run:

* one process, one torch thread, no dask (:func:`reconstruct_4d`, the reference result);
* a LocalCluster of 1 and of 2 worker processes (1 thread each), the same slabs (s/4 rows each) via
  :func:`reconstruct_slabs`, written slab by slab into an HDF5 result as the CLI does; wall time from
  submit to the last slab on disk, peak RSS of every worker (``ru_maxrss``) and its RSS when idle
  (torch imported), and the max relative difference to the reference;
* on one thread: ``a``, building the sparse projector (independent of the rows: each worker builds
  it once per run and shares it among its slabs), and ``b``, the SIRT cost per detector row.

It ends with the inputs of the 1024³ × 300-frame, 8-GPU model in RESULTS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def make_series(size: int, frames: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    golden = np.mod(np.arange(frames) * 0.6180339887 * 140.0, 140.0) - 70.0
    return rng.random((frames, size, size), dtype=np.float32), golden, np.arange(frames, dtype=np.float64)


def _usage() -> tuple[float, float, float]:
    """(current RSS MB, peak RSS MB, CPU seconds) of this process (run on a worker)."""
    import psutil  # noqa: PLC0415 (distributed depends on it)

    import torch  # noqa: F401, PLC0415 (the idle baseline includes torch)

    me = psutil.Process()
    cpu = me.cpu_times()
    return (me.memory_info().rss / 1e6, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            cpu.user + cpu.system)


def one_process(series, params, device: str) -> tuple[np.ndarray, float]:
    from tiltstream.recon.batch import reconstruct_4d

    t0 = time.perf_counter()
    vol = reconstruct_4d(*series, [0.0], params, device=device)
    return vol, time.perf_counter() - t0


def on_cluster(n_workers: int, series, params, slab_rows: int, ref: np.ndarray, out_dir: Path, device: str) -> dict:
    import distributed

    from tiltstream.recon.dask_batch import reconstruct_slabs
    from tiltstream.stream.results import open_result_writer, read_result

    frames = series[0]
    shape = (frames.shape[2], frames.shape[1], frames.shape[2])
    path = out_dir / f"scale_{n_workers}.h5"
    with distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=40) as cluster, \
            distributed.Client(cluster) as client:
        client.wait_for_workers(n_workers)
        idle = client.run(_usage)
        t0 = time.perf_counter()
        with open_result_writer(path, shape, [0.0], attrs={"method": "sirt"}, overwrite=True,
                                chunk_rows=slab_rows) as writer:
            slabs = reconstruct_slabs(client, *series, [0.0], params, device=device, slab_rows=slab_rows,
                                      write=lambda slab, block: writer.write_rows(slab.y0, block))
        wall = time.perf_counter() - t0
        mem = client.run(_usage)
    got = read_result(path)[0]
    path.unlink()
    return {
        "workers": n_workers,
        "slabs": len(slabs),
        "wall_s": wall,
        "idle_mb": max(v[0] for v in idle.values()),
        "peak_mb": max(v[1] for v in mem.values()),
        "cpu_s": sum(mem[w][2] - idle[w][2] for w in mem),
        "rel_diff": float(np.abs(got - ref).max() / np.abs(ref).max()),
    }


def slab_cost(series, params, device: str, rows: int = 32) -> tuple[float, float]:
    """(a, b) on one thread: a = building the projector (once per worker and run: it does not depend on
    the rows), b = SIRT seconds per detector row (a ``rows``-row slab, operator built beforehand)."""
    from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
    from tiltstream.recon.projector import operator
    from tiltstream.recon.sirt import sirt

    frames, angles, _ = series
    n, _, nu = frames.shape
    t0 = time.perf_counter()
    A = operator(VolumeGeometry((nu, rows, nu)), ProjectionGeometry(angles, (rows, nu)), device=device)
    _sync(device)
    t1 = time.perf_counter()
    sirt(A, torch.as_tensor(frames[:, :rows], device=A.device), params.iterations)
    _sync(device)
    return t1 - t0, (time.perf_counter() - t1) / rows


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=_ints, default=[128, 256])
    ap.add_argument("--frames", type=_ints, default=[64, 128], help="frames per size")
    ap.add_argument("--iterations", type=_ints, default=[30, 10], help="SIRT iterations per size")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each cluster size, alternating (best kept)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda (workers share the one GPU)")
    args = ap.parse_args()
    from tiltstream.recon.batch import BatchParams

    torch.set_num_threads(1)  # the reference and the slab costs on one thread, like one worker
    print(f"{time.strftime('%Y-%m-%d')}, {platform.node()} ({os.cpu_count()} CPU cores, {platform.machine()}), "
          f"load {os.getloadavg()[0]:.1f} at the start, torch {torch.__version__}")
    rows_out, costs = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        for size, n, iters in zip(args.sizes, args.frames, args.iterations):
            series = make_series(size, n)
            params = BatchParams(method="sirt", iterations=iters)
            ref, wall0 = one_process(series, params, args.device)
            slab_rows = size // 4
            best: dict[int, dict] = {}
            for _ in range(args.repeats):  # alternate 1 and 2 workers; keep each one's fastest run
                for w in (1, 2):
                    r = on_cluster(w, series, params, slab_rows, ref, Path(tmp), args.device)
                    if w not in best or r["wall_s"] < best[w]["wall_s"]:
                        best[w] = r
            results = [best[1], best[2]]
            a, b = slab_cost(series, params, args.device)
            costs[size] = (n, iters, a, b)
            for r in results:
                r.update(size=size, frames=n, iterations=iters, one_process_s=wall0)
                rows_out.append(r)
            print(f"  {size}³: done (one process {wall0:.1f} s)", flush=True)
    print(f"\nbest of {args.repeats} alternating runs per cluster size; load {os.getloadavg()[0]:.1f} at the end")
    print("| volume | frames | SIRT it. | one process (s) | workers | slabs | wall (s) | speed-up vs 1 worker "
          "| worker CPU (s) | peak RSS / worker (MB) | idle RSS / worker (MB) | max rel. diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = {}
    for r in rows_out:
        base.setdefault(r["size"], r["wall_s"])
        print(f"| {r['size']}³ | {r['frames']} | {r['iterations']} | {r['one_process_s']:.1f} | {r['workers']} | "
              f"{r['slabs']} | {r['wall_s']:.1f} | {base[r['size']] / r['wall_s']:.2f}× | {r['cpu_s']:.1f} | "
              f"{r['peak_mb']:.0f} | "
              f"{r['idle_mb']:.0f} | {r['rel_diff']:.1e} |")
    print("\nOn one CPU thread: a = building the projector, b = SIRT per detector row:")
    print("| volume | frames | SIRT it. | a: projector (s) | b: per row (s) | b per row per iteration per "
          "(Z·X·frames) (ns) |")
    print("|---|---|---|---|---|---|")
    for size, (n, iters, a, b) in costs.items():
        print(f"| {size}³ | {n} | {iters} | {a:.2f} | {b:.4f} | {1e9 * b / iters / (size * size * n):.3f} |")


if __name__ == "__main__":
    main()
