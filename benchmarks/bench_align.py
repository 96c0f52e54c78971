"""Alignment on real data: tiltstream vs etspy (NIST) on an experimental HAADF-STEM tilt series.

    python benchmarks/bench_align.py [--data HAADF.mrc] [--cache DIR] [--bin 2] [--iterations 50]

Data: the needle-shaped specimen tilt series that etspy ships in its wheel (etspy 1.3.0,
``etspy/tests/test_data/HAADF.mrc`` + ``HAADF.rawtlt``: 77 HAADF-STEM projections of 256 × 256
pixels, −76° … +76° in 2° steps, int16 with a −31 900 offset; etspy's ``datasets.get_needle_data``;
A. A. Herzing et al., NIST). Without ``--data`` the wheel is fetched once with
``pip download --no-deps etspy==1.3.0`` into ``--cache`` and the files are extracted from it.
The same wheel holds ``HAADF_Aligned.hspy``, the series as aligned by the etspy authors.

Alignments compared, in one run, each turned into frames with the tilt axis along the rows:

* **unaligned**: background removed, turned 90° (the FEI log beside the data says "Tilt Axis
  Angle 90"; tiltstream finds the quarter turn by itself, the unaligned baseline is given it);
* **tiltstream**: ``align_series`` with defaults (finds the quarter turn, in-plane angle, drift,
  axis offset, projection matching), one resampling, axis offset in the geometry;
* **etspy PC**: ``stack_register('PC')`` (phase correlation, its default);
* **etspy PC + CoM**: the workflow in etspy's documentation for this data set,
  ``stack_register('PC')`` then ``tilt_align('CoM')`` (tilt-axis shift and rotation);
* **etspy shipped**: ``HAADF_Aligned.hspy`` from the wheel (the authors' own alignment; no timing);
* a diagnostic row: tiltstream given the in-plane tilt-axis angle that etspy finds.

Metric (reprojection consistency; the same code, binning and SIRT for all): frames normalised the
same way, binned by ``--bin``; two-fold held-out reprojection error: SIRT (``--iterations``) on every
other angle, NRMSE of its reprojections at the held-out angles, both folds averaged; also the
in-sample NRMSE of a reconstruction from all frames. Each alignment is scored with its own axis
offset, and again with the offset that suits it best (1-D search on the held-out error, so a method
that leaves the axis off-centre is not penalised for that alone). The needle runs out of the frame
along the tilt axis, so how each tool fills pixels shifted in from the edge (tiltstream repeats the
edge, etspy's Fourier shift wraps around) matters at the ends of the axis: the held-out error is
also given for the central 3/4 of the rows alone. Lower is better.

Prints a Markdown table for benchmarks/RESULTS.md and writes ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
import zipfile
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread for every tool (the machine is shared)

import numpy as np  # noqa: E402

WHEEL = "etspy-1.3.0-py3-none-any.whl"
FILES = ("HAADF.mrc", "HAADF.rawtlt", "HAADF.txt", "HAADF_Aligned.hspy")


def fetch(cache: Path) -> Path:
    """The directory holding the HAADF files, downloading etspy's wheel with pip if needed."""
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / "etspy-needle"
    if all((out / f).exists() for f in FILES):
        return out
    wheel = cache / WHEEL
    if not wheel.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "etspy==1.3.0", "-d", str(cache)],
                       check=True)
    out.mkdir(exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for f in FILES:
            (out / f).write_bytes(z.read(f"etspy/tests/test_data/{f}"))
    return out


def to_rows(frames: np.ndarray) -> np.ndarray:
    """Frames with the tilt axis along X (as stored, etspy's convention) → axis along the rows."""
    from tiltstream.recon.align import transform_frames

    return transform_frames(frames, tilt_axis_angle_deg=90.0)  # an exact quarter turn


def prepared(frames: np.ndarray, binning: int) -> np.ndarray:
    from tiltstream.recon.align import normalize_frames
    from tiltstream.recon.align.matching import bin_frames

    f, _ = normalize_frames(np.asarray(frames, dtype=np.float32))
    return bin_frames(f, binning)[0]


class Scorer:
    """Held-out and in-sample reprojection NRMSE of SIRT reconstructions (axis offset in binned px)."""

    def __init__(self, angles: np.ndarray, shape: tuple[int, int], iterations: int):
        from tiltstream.recon import operator, projection_geometry, volume_geometry
        from tiltstream.recon.sirt import sirt_weights

        self.angles = angles
        self.iterations = iterations
        order = np.argsort(angles)
        self.folds = [np.sort(order[0::2]), np.sort(order[1::2])]
        ny, nu = shape
        vol = volume_geometry((nu, ny, nu))
        self.ops = {}
        for name, idx in (("a", self.folds[0]), ("b", self.folds[1]), ("all", np.arange(angles.size))):
            A = operator(vol, projection_geometry(angles[idx], det_shape=shape), device="cpu")
            self.ops[name] = (A, sirt_weights(A))

    def _fit(self, name: str, y: np.ndarray):
        import torch

        from tiltstream.recon.sirt import sirt

        A, w = self.ops[name]
        return sirt(A, torch.as_tensor(np.ascontiguousarray(y)), self.iterations, weights=w)

    def held_out(self, frames: np.ndarray, offset: float) -> float:
        import torch

        from tiltstream.recon.align.axis import shift_columns

        f = shift_columns(frames, -offset)
        errs = []
        for train, test, name_train, name_test in ((0, 1, "a", "b"), (1, 0, "b", "a")):
            x = self._fit(name_train, f[self.folds[train]])
            y = torch.as_tensor(f[self.folds[test]])
            errs.append(float(torch.linalg.vector_norm(self.ops[name_test][0](x) - y) / torch.linalg.vector_norm(y)))
        return float(np.mean(errs))

    def in_sample(self, frames: np.ndarray, offset: float) -> float:
        import torch

        from tiltstream.recon.align.axis import shift_columns

        f = shift_columns(frames, -offset)
        x = self._fit("all", f)
        y = torch.as_tensor(f)
        return float(torch.linalg.vector_norm(self.ops["all"][0](x) - y) / torch.linalg.vector_norm(y))


def best_offset(frames: np.ndarray, angles: np.ndarray, iterations: int, start: float, search: float) -> float:
    """Axis offset (binned px) minimising the held-out error, on 16 rows (each row is its own problem)."""
    from scipy.optimize import minimize_scalar

    energy = np.sum(frames.astype(np.float64) ** 2, axis=(0, 2))
    rows = np.flatnonzero(energy > 0.05 * energy.max())
    rows = rows[np.linspace(0, rows.size - 1, min(16, rows.size)).round().astype(int)]
    sub = np.ascontiguousarray(frames[:, rows])
    scorer = Scorer(angles, sub.shape[1:], iterations)
    res = minimize_scalar(lambda c: scorer.held_out(sub, c), bounds=(start - search, start + search),
                          method="bounded", options={"xatol": 0.05})
    return float(res.x)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="HAADF.mrc (with .rawtlt beside it) or its folder")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "tiltstream-bench")
    ap.add_argument("--bin", type=int, default=2, help="binning for the consistency metric (default 2)")
    ap.add_argument("--iterations", type=int, default=50, help="SIRT iterations for the metric (default 50)")
    ap.add_argument("--json", type=Path, default=None, help="write the numbers here")
    ap.add_argument("--no-etspy", action="store_true", help="skip etspy (e.g. when it cannot be installed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(1)
    from tiltstream.recon.align import AlignParams, align_series
    from tiltstream.stream.readers import read_series

    folder = args.data if args.data is not None and args.data.is_dir() else (
        args.data.parent if args.data is not None else fetch(args.cache))
    mrc = args.data if args.data is not None and args.data.is_file() else folder / "HAADF.mrc"
    series = read_series(mrc, tilt_axis_angle_deg=0.0)  # as stored: tilt axis along X
    angles = series.angles_deg
    n, ny, nx = series.frames.shape
    variants: dict[str, dict] = {}

    variants["unaligned (axis turned 90°)"] = {"frames": to_rows(series.frames), "offset": 0.0, "seconds": None}

    t = time.perf_counter()
    alignment = align_series(series)
    aligned = alignment.apply(series.frames)
    variants["tiltstream align_series"] = {"frames": aligned, "offset": alignment.axis_offset_px,
                                           "seconds": time.perf_counter() - t,
                                           "note": f"axis {alignment.tilt_axis_angle_deg:.2f}°, offset "
                                                   f"{alignment.axis_offset_px:.2f} px, "
                                                   f"{alignment.info['matching'].get('rounds')} matching rounds, "
                                                   f"{len(alignment.info['axis'].get('refinement', []))} band-angle "
                                                   f"rounds"}

    etspy_version = None
    if not args.no_etspy:
        import etspy
        import etspy.api as etspy_api

        etspy_version = etspy.__version__ if hasattr(etspy, "__version__") else "1.3.0"
        stack = etspy_api.load(mrc)
        t = time.perf_counter()
        pc = stack.stack_register("PC")
        t_pc = time.perf_counter() - t
        t = time.perf_counter()
        com = pc.tilt_align("CoM")
        t_com = time.perf_counter() - t
        variants["etspy stack_register('PC')"] = {"frames": to_rows(np.asarray(pc.data)), "offset": 0.0,
                                                  "seconds": t_pc}
        variants["etspy PC + tilt_align('CoM')"] = {"frames": to_rows(np.asarray(com.data)), "offset": 0.0,
                                                    "seconds": t_pc + t_com,
                                                    "note": f"tilt axis {float(com.metadata.Tomography.tiltaxis):.2f}°"}
        # diagnostic: what the in-plane angle that etspy finds (opposite sign convention) is worth
        angle = 90.0 - float(com.metadata.Tomography.tiltaxis)
        hinted = align_series(series, params=AlignParams(tilt_axis_angle_deg=angle, estimate_rotation=False))
        variants[f"tiltstream, in-plane angle from etspy ({angle:.2f}°)"] = {
            "frames": hinted.apply(series.frames), "offset": hinted.axis_offset_px, "seconds": None,
            "note": f"offset {hinted.axis_offset_px:.2f} px (diagnostic row)"}
        shipped = etspy_api.load(folder / "HAADF_Aligned.hspy")
        variants["etspy shipped HAADF_Aligned.hspy"] = {
            "frames": to_rows(np.asarray(shipped.data)), "offset": 0.0, "seconds": None,
            "note": f"tilt axis {float(shipped.metadata.Tomography.tiltaxis):.2f}°, "
                    f"shift {float(shipped.metadata.Tomography.xshift):.2f} px"}

    rows = []
    scorer = central = None
    for name, v in variants.items():
        f = prepared(v["frames"], args.bin)
        m = f.shape[1] // 8  # rows away from the ends of the axis, where edge handling does not matter
        if scorer is None:
            scorer = Scorer(angles, f.shape[1:], args.iterations)
            central = Scorer(angles, (f.shape[1] - 2 * m, f.shape[2]), args.iterations)
        own = v["offset"] / args.bin
        best = best_offset(f, angles, args.iterations, own, 24.0 / args.bin)
        row = {"alignment": name, "seconds": v["seconds"], "note": v.get("note", ""),
               "offset_px": v["offset"], "held_out": scorer.held_out(f, own), "in_sample": scorer.in_sample(f, own),
               "held_out_central": central.held_out(np.ascontiguousarray(f[:, m:-m]), own),
               "best_offset_px": best * args.bin, "held_out_best_offset": scorer.held_out(f, best)}
        rows.append(row)
        print(f"{name}: held-out {row['held_out']:.4f}, in-sample {row['in_sample']:.4f}, best-offset held-out "
              f"{row['held_out_best_offset']:.4f}", file=sys.stderr, flush=True)

    env = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "torch": torch.__version__, "etspy": etspy_version, "load": os.getloadavg(),
           "frames": [n, ny, nx], "binning": args.bin, "iterations": args.iterations}
    print(f"\n{n} frames {ny}×{nx}, metric at binning {args.bin}, SIRT {args.iterations} iterations, "
          f"load average {' '.join(f'{x:.1f}' for x in env['load'])}\n")
    print("| alignment | wall time (s) | held-out NRMSE | held-out, central rows | in-sample NRMSE "
          "| held-out, best axis offset | notes |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        secs = "—" if r["seconds"] is None else f"{r['seconds']:.1f}"
        print(f"| {r['alignment']} | {secs} | {r['held_out']:.4f} | {r['held_out_central']:.4f} | {r['in_sample']:.4f} | "
              f"{r['held_out_best_offset']:.4f} (at {r['best_offset_px']:+.1f} px) | {r['note']} |")
    if args.json is not None:
        args.json.write_text(json.dumps({"env": env, "rows": rows}, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
