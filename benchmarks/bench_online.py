"""Live quality against wall time: the streaming SIRT and the online DIP of a real-time run.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_online.py [--size 64] [--frames 240] [--minutes 8]

Runs ``tiltstream demo`` (tiltstream/demo.py: the simulated microscope in its own process at real
time, the recorder, and the reconstruction service with the online DIP, on this machine) on a
dynamic nanorod whose acquisition lasts ``--minutes``. Every volume the service publishes is scored
against the ground truth at the time it shows (recon/live_scores.py). As the reference in the same
run, the recording is reconstructed offline with the moving-window SIRT (the same 64-frame window,
60 iterations) at the times of the live SIRT's volumes, and scored the same way. Writes the error
against wall-time curves to ``docs/online_quality.png`` and prints the table for
benchmarks/RESULTS.md. Goals (live-quality issue): live SIRT mean ≤ 1.3 × the offline windowed
SIRT's; the online DIP's last estimate before the end ≤ 0.5 × the live SIRT's mean; its first
estimate better than the live SIRT within 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def native_duration_s(frames: int) -> float:
    """How long the simulated microscope takes for ``frames`` frames at 1× (its timing model)."""
    from tiltstream.sim.recipe import Recipe
    from tiltstream.sim.schemes import tilt_scheme

    r = Recipe()
    lo, hi = r.tilt_range_deg
    _, mid, _ = r.timing.times(tilt_scheme(r.scheme, frames, lo=lo, hi=hi))
    return float(mid[-1])


def offline_reference(recording: Path, times: np.ndarray, window: int) -> list[float]:
    """NRMSE of the moving-window SIRT of the recording at ``times`` against the truth there."""
    from tiltstream.recon.batch import windowed_sirt
    from tiltstream.recon.scoring import nrmse_over_time
    from tiltstream.recon.windowed import Window
    from tiltstream.simulate import truth_from_recording
    from tiltstream.stream.readers import read_series

    s = read_series(recording)
    vols = windowed_sirt(s.frames, s.angles_deg, s.times_s, times, window=Window(frames=window), num_iterations=60)
    return nrmse_over_time(vols, times, truth_from_recording(recording))


def plot(rows: list[dict], offline: tuple[np.ndarray, list[float]], end_wall_s: float, path: Path) -> None:
    """Error against wall time: live SIRT (line), DIP estimates (dots, mean over an estimate's volumes),
    offline windowed SIRT at the live volumes' times (dashed), end of acquisition (vertical line)."""
    import pyqtgraph as pg
    import pyqtgraph.exporters
    from pyqtgraph.Qt import QtCore

    app = pg.mkQApp()
    pg.setConfigOptions(antialias=True, background="w", foreground="k")
    w = pg.PlotWidget()
    w.resize(1000, 560)
    p = w.getPlotItem()
    p.setTitle("Live quality against wall time (NRMSE vs ground truth at each volume's own time)")
    p.setLabel("bottom", "wall time since the first frame (s)")
    p.setLabel("left", "NRMSE")
    p.showGrid(x=True, y=True, alpha=0.3)
    p.getAxis("left").enableAutoSIPrefix(False)
    legend = p.addLegend(offset=(-10, 10))
    sirt = [r for r in rows if r["source"] != "dip"]
    p.plot([r["wall_s"] for r in sirt], [r["nrmse"] for r in sirt], pen=pg.mkPen("#1f77b4", width=2),
           name="live streaming SIRT")
    est: dict[int, list[dict]] = {}
    for r in rows:
        if r["source"] == "dip":
            est.setdefault(r["estimate"], []).append(r)
    dw = [v[0]["wall_s"] for v in est.values()]
    de = [float(np.mean([r["nrmse"] for r in v])) for v in est.values()]
    p.plot(dw, de, pen=pg.mkPen("#c03fd0", width=2), symbol="o", symbolSize=7, symbolBrush="#c03fd0",
           name="online DIP (mean over each estimate)")
    times, errs = offline
    t_to_wall = {r["t_s"]: r["wall_s"] for r in sirt}
    p.plot([t_to_wall[t] for t in times], errs, pen=pg.mkPen("#2ca02c", width=2, style=QtCore.Qt.PenStyle.DashLine),
           name="offline windowed SIRT, same times")
    p.addItem(pg.InfiniteLine(end_wall_s, angle=90, pen=pg.mkPen("#888", style=QtCore.Qt.PenStyle.DotLine)))
    legend.setParentItem(p.vb)
    p.setYRange(0, min(1.0, 1.2 * max([*(r["nrmse"] for r in sirt[len(sirt) // 10:]), *de[1:], *errs])))
    app.processEvents()
    path.parent.mkdir(parents=True, exist_ok=True)
    exporter = pyqtgraph.exporters.ImageExporter(p)
    exporter.parameters()["width"] = 1200
    exporter.export(str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--minutes", type=float, default=8.0, help="wall time of the acquisition")
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out-dir", type=Path, default=Path("out/bench_online"))
    ap.add_argument("--png", type=Path, default=ROOT / "docs" / "online_quality.png")
    args = ap.parse_args()
    from tiltstream.cli import build_parser
    from tiltstream.demo import run_demo

    speed = native_duration_s(args.frames) / (60.0 * args.minutes)
    demo_args = build_parser().parse_args([
        "demo", "--size", str(args.size), "--frames", str(args.frames), "--speed", f"{speed:.4f}",
        "--window", str(args.window), "--device", args.device, "--out-dir", str(args.out_dir), "--no-monitor"])
    t0 = time.perf_counter()
    summary = run_demo(demo_args)
    wall = time.perf_counter() - t0
    rows = json.loads((args.out_dir / "live_scores.json").read_text())
    sirt = [r for r in rows if r["source"] != "dip"]
    recording = Path(summary["recording"])
    # the reference: offline windowed SIRT at the times of (up to 24 of) the live SIRT's volumes,
    # once the live window is full
    from tiltstream.stream.readers import read_series

    series_t = read_series(recording).times_s
    full = float(np.mean(series_t[: args.window]))
    live_ok = [r for r in sirt if r["t_s"] >= full]
    pick = np.unique(np.linspace(0, len(live_ok) - 1, min(24, len(live_ok))).astype(int))
    times = np.array([live_ok[i]["t_s"] for i in pick])
    t1 = time.perf_counter()
    offline = offline_reference(recording, times, args.window)
    t_off = time.perf_counter() - t1
    live_same = [live_ok[i]["nrmse"] for i in pick]
    live_mean = float(np.mean([r["nrmse"] for r in live_ok]))
    ls, od = summary.get("live_sirt", {}), summary.get("online_dip", {})
    plot(rows, (times, offline), summary.get("end_of_acquisition_wall_s") or 0.0, args.png)
    res = {
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.python_version()}",
        "size": args.size, "frames": args.frames, "acquisition_s": summary["series_duration_s"] / speed,
        "wall_s": wall, "live_update_ms_p50": summary["live"]["update_ms_p50"],
        "live_sirt_mean_all": ls.get("mean_nrmse"), "live_sirt_mean_window_full": live_mean,
        "live_sirt_at_offline_times": float(np.mean(live_same)), "offline_windowed_sirt": float(np.mean(offline)),
        "ratio_live_to_offline": float(np.mean(live_same) / np.mean(offline)),
        "dip": od, "result_4d_mean": summary["result_4d"]["mean_nrmse"], "offline_s": t_off,
        "dip_last_before_end_over_live_mean": (od.get("last_before_end_nrmse") or float("nan")) / live_mean,
    }
    print(json.dumps(res, indent=2))
    print(f"\n| quantity | value | goal |\n|---|---|---|\n"
          f"| live SIRT mean NRMSE (window full, {len(live_ok)} volumes) | {live_mean:.4f} | |\n"
          f"| live SIRT / offline windowed SIRT, same {len(times)} times | {res['ratio_live_to_offline']:.2f} "
          f"({np.mean(live_same):.4f} / {np.mean(offline):.4f}) | ≤ 1.3 |\n"
          f"| online DIP first estimate | {od.get('first_estimate_wall_s', float('nan')):.0f} s, NRMSE "
          f"{od.get('first_estimate_nrmse', float('nan')):.4f} | |\n"
          f"| online DIP better than the live SIRT from | {od.get('beats_live_sirt_wall_s')} s | ≤ 60 s |\n"
          f"| online DIP last estimate before the end | {od.get('last_before_end_nrmse')} "
          f"({res['dip_last_before_end_over_live_mean']:.2f} × live SIRT mean) | ≤ 0.5 × |\n"
          f"| online DIP at the end (every frame) | {od.get('at_end_nrmse')} | |\n"
          f"| offline 4-D (demo's windowed SIRT) | {res['result_4d_mean']:.4f} | |\n"
          f"| live SIRT update median | {res['live_update_ms_p50']:.1f} ms | |")


if __name__ == "__main__":
    main()
