"""SIRT speed and quality: tiltstream vs astra-toolbox's CPU SIRT on the same simulated data.

    python benchmarks/bench_sirt_vs_astra.py [--size 128] [--angles 64] [--iterations 50]

Simulates a static gold nanorod (tiltstream.sim, its own finer-sampled projector) with Poisson noise
at golden-ratio angles over ±70°, then runs, each in its own process (so peak memory is its own):

* tiltstream SIRT (sparse strip-model projector, torch, all Y-slices at once),
* ASTRA CPU SIRT, slice by slice (ASTRA's CPU algorithms are 2-D), 'linear' and 'strip' kernels,
  single-threaded and with one slice per core,
* where a GPU is present: ASTRA SIRT3D_CUDA and tiltstream on CUDA (--size 256 --angles 128),
* with ``--baseline REV``: tiltstream as it was at git revision REV, in the same run (a speed-up
  recorded on another day compares two machines' moods, not two versions of the code).

``--repeats K`` runs the whole list K times, interleaved, and reports each method's median.

Same iterations, same positivity. Reports time per iteration, the ratio, NRMSE against the truth and
peak RSS. Prints a Markdown table for benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def make_data(path: Path, size: int, n_angles: int, dose: float, seed: int) -> None:
    from tiltstream.sim import make_phantom, simulate_series

    rng = np.random.default_rng(seed)
    ph = make_phantom("nanorod", size=size, static=True)
    s = simulate_series(ph, n_frames=n_angles, scheme="golden", dose_e_per_A2=dose, blur=False, rng=rng)
    np.savez(path, frames=s.frames, angles=s.angles_deg, truth=s.truth(0.0))


def nrmse(x: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(x - truth) / np.linalg.norm(truth))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_tiltstream(data: dict, iterations: int, device: str) -> dict:
    import torch

    from tiltstream.recon import operator, projection_geometry, volume_geometry
    from tiltstream.recon.sirt import sirt

    frames, angles, truth = data["frames"], data["angles"], data["truth"]
    t0 = time.perf_counter()
    A = operator(volume_geometry(truth.shape), projection_geometry(angles, det_shape=frames.shape[1:]), device=device)
    y = torch.as_tensor(frames, device=A.device)
    sirt(A, y, 1)  # weights + warm-up
    if A.device.type == "cuda":
        torch.cuda.synchronize()
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    x = sirt(A, y, iterations)
    if A.device.type == "cuda":
        torch.cuda.synchronize()
    t_iter = (time.perf_counter() - t0) / iterations
    out = {"s_per_iter": t_iter, "setup_s": t_build, "nrmse": nrmse(x.cpu().numpy(), truth)}
    if A.device.type == "cuda":
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def astra_2d_vectors(angles_deg: np.ndarray, z_sign: float) -> np.ndarray:
    """ASTRA parallel_vec rows (ray, det centre, u) for the tiltstream convention u = x·cosθ + z·sinθ,
    with ASTRA's image rows along z (z_sign picks the direction, calibrated below)."""
    th = np.deg2rad(angles_deg)
    c, s = np.cos(th), np.sin(th)
    ray = np.stack([-s * z_sign, c], 1)  # perpendicular to u within the (x, z) plane, in ASTRA (x, y)
    u = np.stack([c, s * z_sign], 1)
    return np.concatenate([ray, np.zeros_like(ray), u], 1)


def astra_geoms(shape, angles, n_det, z_sign):
    import astra

    nz, _, nx = shape
    vg = astra.create_vol_geom(nz, nx)
    pg = astra.create_proj_geom("parallel_vec", n_det, astra_2d_vectors(angles, z_sign))
    return vg, pg


def calibrate_astra(data: dict) -> float:
    """Pick ASTRA's z direction so its projection of the truth matches tiltstream's (corr > 0.99)."""
    import astra

    from tiltstream.recon import operator, projection_geometry, volume_geometry

    truth, angles, frames = data["truth"], data["angles"], data["frames"]
    y_mid = truth.shape[1] // 2
    ref = operator(volume_geometry(truth.shape), projection_geometry(angles, det_shape=frames.shape[1:]))(truth)
    best = (-2.0, 1.0)
    for z_sign in (1.0, -1.0):
        vg, pg = astra_geoms(truth.shape, angles, frames.shape[2], z_sign)
        pid = astra.create_projector("linear", pg, vg)
        sid, sino = astra.create_sino(np.ascontiguousarray(truth[:, y_mid, :]), pid)
        astra.data2d.delete(sid)
        astra.projector.delete(pid)
        corr = np.corrcoef(sino.ravel(), ref[:, y_mid, :].ravel())[0, 1]
        best = max(best, (corr, z_sign))
    if best[0] < 0.99:
        raise RuntimeError(f"could not match ASTRA's geometry to tiltstream's (best corr {best[0]:.3f})")
    return best[1]


def run_astra_cpu(data: dict, iterations: int, kernel: str, workers: int) -> dict:
    import astra

    frames, angles, truth = data["frames"], data["angles"], data["truth"]
    z_sign = calibrate_astra(data)
    vg, pg = astra_geoms(truth.shape, angles, frames.shape[2], z_sign)
    out = np.zeros_like(truth)

    def one_slice(y: int) -> None:
        pid = astra.create_projector(kernel, pg, vg)
        sid = astra.data2d.create("-sino", pg, np.ascontiguousarray(frames[:, y, :]))
        rid = astra.data2d.create("-vol", vg, 0.0)
        cfg = astra.astra_dict("SIRT")
        cfg.update(ProjectorId=pid, ProjectionDataId=sid, ReconstructionDataId=rid, option={"MinConstraint": 0.0})
        aid = astra.algorithm.create(cfg)
        astra.algorithm.run(aid, iterations)
        out[:, y, :] = astra.data2d.get(rid)
        for f, i in ((astra.algorithm.delete, aid), (astra.data2d.delete, sid), (astra.data2d.delete, rid),
                     (astra.projector.delete, pid)):
            f(i)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one_slice, range(truth.shape[1])))
    t = (time.perf_counter() - t0) / iterations
    return {"s_per_iter": t, "nrmse": nrmse(out, truth)}


def run_astra_cuda(data: dict, iterations: int) -> dict:
    import astra

    from tiltstream.recon.astra_backend import astra_vectors
    from tiltstream.recon.geometry import ProjectionGeometry

    frames, angles, truth = data["frames"], data["angles"], data["truth"]
    nz, ny, nx = truth.shape
    vg = astra.create_vol_geom(ny, nx, nz)
    pg = astra.create_proj_geom("parallel3d_vec", ny, frames.shape[2],
                                astra_vectors(ProjectionGeometry(angles, frames.shape[1:])))
    sid = astra.data3d.create("-sino", pg, np.ascontiguousarray(frames.transpose(1, 0, 2)))
    rid = astra.data3d.create("-vol", vg, 0.0)
    cfg = astra.astra_dict("SIRT3D_CUDA")
    cfg.update(ProjectionDataId=sid, ReconstructionDataId=rid, option={"MinConstraint": 0.0})
    aid = astra.algorithm.create(cfg)
    astra.algorithm.run(aid, 1)
    astra.data3d.store(rid, 0.0)
    t0 = time.perf_counter()
    astra.algorithm.run(aid, iterations)
    t = (time.perf_counter() - t0) / iterations
    return {"s_per_iter": t, "nrmse": nrmse(astra.data3d.get(rid), truth)}


def baseline_tree(rev: str, dest: Path) -> Path:
    """tiltstream at git revision ``rev`` as an importable tree under ``dest`` (for PYTHONPATH): the
    revision's files, with its ``package-dir`` folders placed where ``import tiltstream.*`` finds them."""
    repo = Path(__file__).resolve().parents[1]
    archive = dest / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "-C", str(repo), "archive", rev], stdout=f, check=True)
    src = dest / "src"
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    mapping = tomllib.loads((src / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    root = dest / "site"
    for package, folder in sorted(mapping.items()):  # "tiltstream" first, then its sub-packages
        target = root.joinpath(*package.split("."))
        target.parent.mkdir(parents=True, exist_ok=True)
        if package == "tiltstream":
            target.mkdir()
            for item in (src / folder).iterdir():
                (target / item.name).symlink_to(item)
        else:
            target.symlink_to(src / folder)
    return root


def child(args: argparse.Namespace) -> None:
    data = dict(np.load(args.data))
    if args.only in ("tiltstream", "tiltstream-1"):
        if args.only == "tiltstream-1":  # one torch thread: the same compute as ASTRA's "1 thread", and
            import torch                 # no OpenMP pool to contend with other jobs on a shared machine

            torch.set_num_threads(1)
        res = run_tiltstream(data, args.iterations, args.device)
    elif args.only == "astra-cuda":
        res = run_astra_cuda(data, args.iterations)
    else:
        _, kernel, workers = args.only.split(":")
        res = run_astra_cpu(data, args.iterations, kernel, int(workers))
    res["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(res))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--angles", type=int, default=64)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--dose", type=float, default=2000.0, help="e-/Å² per frame")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--baseline", metavar="REV", help="also time tiltstream at this git revision, same run")
    p.add_argument("--repeats", type=int, default=1, help="run the list this many times, interleaved (median)")
    p.add_argument("--only", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        child(args)
        return

    import torch

    gpu = torch.cuda.is_available()
    runs = [("tiltstream (torch, cpu)", "tiltstream", "cpu"),
            ("tiltstream (torch, cpu, 1 thread)", "tiltstream-1", "cpu"),
            ("ASTRA CPU SIRT, linear, 1 thread", "astra:linear:1", "cpu"),
            ("ASTRA CPU SIRT, linear, 1 slice per core", f"astra:linear:{os.cpu_count()}", "cpu"),
            ("ASTRA CPU SIRT, strip, 1 slice per core", f"astra:strip:{os.cpu_count()}", "cpu")]
    if gpu:
        runs = [("tiltstream (torch, cuda)", "tiltstream", "cuda"), ("ASTRA SIRT3D_CUDA", "astra-cuda", "cuda")] + runs
    with tempfile.TemporaryDirectory() as tmp:
        env = {None: None}
        if args.baseline:
            runs[2:2] = [(f"tiltstream at {args.baseline} (torch, cpu)", "tiltstream", "cpu", args.baseline),
                         (f"tiltstream at {args.baseline} (torch, cpu, 1 thread)", "tiltstream-1", "cpu",
                          args.baseline)]
            env[args.baseline] = {**os.environ, "PYTHONPATH": str(baseline_tree(args.baseline, Path(tmp)))}
        data = Path(tmp) / "data.npz"
        t0 = time.perf_counter()
        make_data(data, args.size, args.angles, args.dose, args.seed)
        print(f"simulated {args.size}³ × {args.angles} angles in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        samples: dict[str, list[dict]] = {}
        for _ in range(args.repeats):
            for label, only, device, *rev in runs:
                cmd = [sys.executable, __file__, "--only", only, "--data", str(data), "--iterations",
                       str(args.iterations), "--device", device]
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                      env=env[rev[0] if rev else None], cwd=tmp)
                if proc.returncode != 0:
                    print(f"{label}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
                    continue
                samples.setdefault(label, []).append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(f"{label}: {samples[label][-1]}", file=sys.stderr)
    results = {label: {k: float(np.median([s[k] for s in runs_])) for k in runs_[0]}
               for label, runs_ in samples.items()}

    base = next(v for k, v in results.items() if k.startswith("tiltstream"))
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}, {'GPU: ' + torch.cuda.get_device_name() if gpu else 'no GPU'}; "
          f"{args.size}³ volume, {args.angles} golden-ratio angles (±70°), {args.iterations} iterations, "
          f"positivity, Poisson noise at {args.dose:g} e⁻/Å² per frame; median of {args.repeats} interleaved "
          f"repeat(s)\n")
    print("| method | s / iteration | tiltstream speed-up | NRMSE vs truth | peak RSS (MB) |")
    print("|---|---|---|---|---|")
    for label, r in results.items():
        print(f"| {label} | {r['s_per_iter']:.4f} | {r['s_per_iter'] / base['s_per_iter']:.1f}× "
              f"| {r['nrmse']:.4f} | {r['peak_rss_mb']:.0f} |")


if __name__ == "__main__":
    main()
