"""DIP space-time reconstruction vs moving-window SIRT on simulated dynamic phantoms.

    python benchmarks/bench_dip.py                      # 64³, 240 frames, nanorod + core_shell (CPU: ~30 min)
    python benchmarks/bench_dip.py --quick              # smoke run (32³, 80 frames, a few hundred steps)
    python benchmarks/bench_dip.py --size 128 --frames 300 --device cuda    # the GPU goal

For each phantom (tiltstream.sim, projected by the simulator's own finer-sampled forward model with
continuous-tilt blur, golden-ratio angles over ±70°, Poisson noise) it reconstructs the volumes at
``--times`` evenly spread time points:

* moving-window SIRT for every window in ``--windows`` (frames nearest in time), and
* the DIP (recon.dip), whose model is chosen by its held-out frames only (never the ground truth),

and reports mean NRMSE and SSIM against the ground truth at the same times, wall time, steps/s and
peak memory, the ratio DIP / best SIRT window (the best window *is* chosen with the ground truth,
which flatters SIRT), and writes a PNG of truth / best SIRT / DIP slices at several times plus a
JSON file with every number. Goal (issue 4): DIP NRMSE ≤ 0.8 × best moving-window SIRT.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import threading
import time
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_dip")


# -- metrics --------------------------------------------------------------------------------------
def nrmse(x: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(x - truth) / np.linalg.norm(truth))


def ssim(x: np.ndarray, truth: np.ndarray, *, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) with a Gaussian window, in 2-D or 3-D; data range from the truth."""
    from scipy.ndimage import gaussian_filter

    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(truth, dtype=np.float64)
    rng = float(y.max() - y.min()) or 1.0
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2

    def blur(a):
        return gaussian_filter(a, sigma, mode="reflect", truncate=3.5)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s.mean())


def scores(volumes: np.ndarray, truths: np.ndarray) -> dict:
    n = [nrmse(v, t) for v, t in zip(volumes, truths)]
    s = [ssim(v, t) for v, t in zip(volumes, truths)]
    return {"nrmse": float(np.mean(n)), "ssim": float(np.mean(s)), "nrmse_per_time": n}


# -- memory ---------------------------------------------------------------------------------------
class PeakRss:
    """Peak resident memory (MB) of this process while the block runs (sampled every 50 ms)."""

    def __enter__(self):
        self.peak = self._rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self._rss())


# -- PNG ------------------------------------------------------------------------------------------
def write_png(path: Path, img: np.ndarray) -> None:
    """8-bit grayscale PNG from a 2-D uint8 array (numpy + zlib only)."""
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[i].tobytes() for i in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + tag + data + zlib.crc32(tag + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
                           + chunk(b"IEND", b""))


def figure(path: Path, rows: list[np.ndarray], *, zoom: int = 3, gap: int = 2) -> None:
    """Rows of (T, Z, Y, X) volumes (truth, SIRT, DIP, ...) → a grid of two central slices per time:
    the Y-slice (X–Z plane, the DIP's unit) and the Z-slice (X–Y plane), on the truth's grey scale."""
    vmax = float(rows[0].max()) or 1.0
    tiles = []
    for vols in rows:
        line = []
        for v in vols:
            nz, ny, nx = v.shape
            a, b = v[:, ny // 2, :], v[nz // 2, :, :]
            sep = np.full((max(a.shape[0], b.shape[0]), gap), vmax)
            pair = np.concatenate([_pad(a, sep.shape[0]), sep, _pad(b, sep.shape[0])], axis=1)
            line.extend([pair, np.full((pair.shape[0], 3 * gap), vmax)])
        tiles.append(np.concatenate(line[:-1], axis=1))
    width = max(t.shape[1] for t in tiles)
    grid = []
    for t in tiles:
        grid += [np.pad(t, ((0, 0), (0, width - t.shape[1]))), np.full((3 * gap, width), vmax)]
    img = np.concatenate(grid[:-1], axis=0)
    img = np.clip(img / vmax, 0, 1) * 255
    img = np.kron(img, np.ones((zoom, zoom)))
    write_png(path, img.round().astype(np.uint8))


def _pad(a: np.ndarray, h: int) -> np.ndarray:
    return np.pad(a, ((0, h - a.shape[0]), (0, 0)))


# -- the benchmark --------------------------------------------------------------------------------
def simulate(phantom: str, size: int, n_frames: int, dose: float, seed: int):
    from tiltstream.sim.recipe import simulated_tilt_series

    sim, _ = simulated_tilt_series(phantom, size=size, n_frames=n_frames, dose_e_per_A2=dose, seed=seed)
    return sim


def run_phantom(name: str, args: argparse.Namespace, out: Path) -> dict:
    import torch

    from tiltstream.recon.batch import BatchParams, reconstruct_4d
    from tiltstream.recon.dip import DipParams, reconstruct_dip

    t0 = time.perf_counter()
    s = simulate(name, args.size, args.frames, args.dose, args.seed)
    times = np.linspace(s.times_s[0], s.times_s[-1], args.times + 2)[1:-1]
    truths = np.stack([s.truth(float(t)) for t in times])
    log.info("%s: %d frames of %s simulated in %.1f s; truth changes by NRMSE %.3f first→last", name, len(s),
             s.frames.shape[1:], time.perf_counter() - t0, nrmse(truths[0], truths[-1]))
    result: dict = {"phantom": name, "times_s": times.tolist(), "sirt": {}}

    for w in args.windows:
        with PeakRss() as mem:
            t1 = time.perf_counter()
            vols = reconstruct_4d(s.frames, s.angles_deg, s.times_s, times,
                                  BatchParams(iterations=args.sirt_iterations, window_frames=w or None),
                                  device=args.device)
            wall = time.perf_counter() - t1
        sc = scores(vols, truths)
        result["sirt"][str(w)] = {**sc, "wall_s": wall, "peak_rss_mb": mem.peak}
        log.info("%s SIRT window %s: NRMSE %.4f SSIM %.4f (%.1f s)", name, w or "all", sc["nrmse"], sc["ssim"], wall)
        if w == _best_window(result):
            best_sirt = vols

    params = DipParams(steps=args.steps, seed=args.seed, device=args.device, time_limit_s=args.time_limit)
    if args.quick:
        params = replace(params, eval_every=25)
    params = replace(params, **args.dip)
    if args.device != "cpu" and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with PeakRss() as mem:
        t1 = time.perf_counter()
        vols, info = reconstruct_dip(s.frames, s.angles_deg, s.times_s, times, params, device=args.device)
        wall = time.perf_counter() - t1
    sc = scores(vols, truths)
    dip = {**sc, "wall_s": wall, "peak_rss_mb": mem.peak, "steps": info["step"], "steps_per_s": info["steps_per_s"],
           "best_step": info["best_step"], "heldout_nrmse": info["heldout_nrmse"], "stopped": info["stopped"],
           "heldout_history": info["heldout_history"], "device": info["device"], "amp": info["amp"]}
    if info["device"].startswith("cuda"):
        dip["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    result["dip"] = dip
    result["dip_parameters"] = info["parameters"]
    bw = _best_window(result)
    result["best_window"] = bw
    result["ratio"] = dip["nrmse"] / result["sirt"][str(bw)]["nrmse"]
    log.info("%s DIP: NRMSE %.4f SSIM %.4f, %d steps in %.0f s (%.2f steps/s), best step %d, held-out %.4f; "
             "ratio to best SIRT %.3f", name, sc["nrmse"], sc["ssim"], info["step"], wall, info["steps_per_s"],
             info["best_step"], info["heldout_nrmse"] or float("nan"), result["ratio"])
    pick = np.unique(np.linspace(0, len(times) - 1, min(5, len(times))).round().astype(int))
    png = out / f"dip_{name}_{args.size}.png"
    figure(png, [truths[pick], best_sirt[pick], vols[pick]])
    result["figure"] = str(png)
    return result


def _best_window(result: dict) -> int:
    return min((int(k) for k in result["sirt"]), key=lambda k: result["sirt"][str(k)]["nrmse"])


def table(results: list[dict]) -> str:
    lines = ["| phantom | method | NRMSE | SSIM | wall (s) | steps/s | peak RSS (MB) |", "|---|---|---|---|---|---|---|"]
    for r in results:
        for w, v in r["sirt"].items():
            label = f"SIRT, window {w if w != '0' else 'all'} frames" + (" (best)" if int(w) == r["best_window"] else "")
            lines.append(f"| {r['phantom']} | {label} | {v['nrmse']:.4f} | {v['ssim']:.4f} | {v['wall_s']:.1f} | – | "
                         f"{v['peak_rss_mb']:.0f} |")
        d = r["dip"]
        lines.append(f"| {r['phantom']} | **DIP** ({d['steps']} steps, best {d['best_step']} by held-out) | "
                     f"**{d['nrmse']:.4f}** | **{d['ssim']:.4f}** | {d['wall_s']:.0f} | {d['steps_per_s']:.2f} | "
                     f"{d['peak_rss_mb']:.0f} |")
    lines.append("")
    for r in results:
        verdict = "meets" if r["ratio"] <= 0.8 else "MISSES"
        lines.append(f"- {r['phantom']}: DIP / best SIRT NRMSE = {r['ratio']:.3f} ({verdict} the ≤ 0.8 goal); "
                     f"held-out NRMSE {r['dip']['heldout_nrmse']:.4f}")
    return "\n".join(lines)


def _parse_override(text: str) -> tuple[str, object]:
    from dataclasses import fields

    from tiltstream.recon.dip import DipParams

    name, sep, value = text.partition("=")
    types = {f.name: f.type for f in fields(DipParams)}
    if not sep or name not in types:
        raise SystemExit(f"--dip: expected NAME=VALUE with NAME a DipParams field, got {text!r}")
    default = getattr(DipParams(), name)
    if value.lower() == "none":
        return name, None
    if isinstance(default, bool):
        return name, value.lower() in ("1", "true", "yes")
    if isinstance(default, int) or "int" in str(types[name]):
        return name, int(value)
    if isinstance(default, float) or "float" in str(types[name]):
        return name, float(value)
    return name, value


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phantoms", default="nanorod,core_shell")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--dose", type=float, default=500.0, help="e⁻/Å² per frame (Poisson noise)")
    ap.add_argument("--times", type=int, default=12, help="time points scored")
    ap.add_argument("--windows", default="10,20,30,40,60,80,120,0", help="SIRT windows in frames (0 = all frames)")
    ap.add_argument("--sirt-iterations", type=int, default=100)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--time-limit", type=float, default=None, help="DIP wall-time limit per phantom (s)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out"))
    ap.add_argument("--dip", action="append", default=[], metavar="NAME=VALUE",
                    help="override a DipParams field, e.g. --dip tv_weight=0.03 (repeatable)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 32³, 80 frames, 200 steps, 5 times")
    args = ap.parse_args(argv)
    args.dip = dict(_parse_override(o) for o in args.dip)
    if args.quick:
        args.size, args.frames, args.steps, args.times = 32, 80, 200, 5
        args.windows = "20,40,0"
    args.windows = [int(w) for w in str(args.windows).split(",")]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)

    import torch

    t0 = time.perf_counter()
    results = [run_phantom(p, args, args.out) for p in args.phantoms.split(",")]
    total = time.perf_counter() - t0
    summary = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU, torch {torch.__version__}, "
                   f"threads {torch.get_num_threads()}" + (f", {torch.cuda.get_device_name()}"
                                                           if torch.cuda.is_available() else ""),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "total_wall_s": total,
        "results": results,
    }
    (args.out / f"bench_dip_{args.size}.json").write_text(json.dumps(summary, indent=1))
    print(f"\n{summary['machine']}; {args.size}³, {args.frames} golden-ratio frames over ±70°, dose {args.dose} "
          f"e⁻/Å², {args.times} time points, SIRT {args.sirt_iterations} iterations; total {total / 60:.1f} min\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
