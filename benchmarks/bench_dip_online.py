"""Online DIP time to quality: one setting after another, frames fed to `OnlineDip` in real time.

    python benchmarks/bench_dip_online.py [--size 64] [--seconds 240] [--stop-frame N] \
        "" "batch_rows=8" "batch_rows=4,batch_frames=16" ...

Each argument is a variant of the shipped online settings (``key=value`` pairs, comma separated;
keys of :class:`~tiltstream.recon.dip.params.DipParams` or :class:`~tiltstream.recon.dip.online.OnlineDipConfig`,
``threads=N`` for torch threads in the training thread). A 240-frame dynamic nanorod is fed to
:class:`~tiltstream.recon.dip.online.OnlineDip` at the pace its acquisition would have over
``--seconds`` (no SIRT, no sockets: the DIP alone, as it trains beside the service), and every
estimate (published every 5 s) is scored against the truth at its own times. Prints one row per
variant: steps, when the estimates first got below 0.3 / 0.2 / 0.1, the last estimate before the end
and the one after it. The real service with everything beside it is ``bench_online.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch

from tiltstream.recon.binning import block_mean
from tiltstream.recon.dip.online import OnlineDip, OnlineDipConfig
from tiltstream.recon.scoring import nrmse
from tiltstream.sim.recipe import simulated_tilt_series, truth_from_record


def configure(variant: str) -> tuple[OnlineDipConfig, int]:
    """The shipped online settings with ``variant``'s changes, and the torch thread count."""
    cfg = OnlineDipConfig(device="cpu", nice=0, publish_period_s=5.0)
    params, threads = cfg.params, 1
    param_fields = {f.name: f.type for f in dataclasses.fields(params)}
    for item in filter(None, variant.split(",")):
        key, value = item.split("=")
        if key == "threads":
            threads = int(value)
        elif key in param_fields:
            params = dataclasses.replace(params, **{key: _parse(value, getattr(params, key))})
        else:
            cfg = dataclasses.replace(cfg, **{key: _parse(value, getattr(cfg, key))})
    return dataclasses.replace(cfg, params=params), threads


def _parse(text: str, like: object) -> object:
    if text == "None":
        return None
    return type(like)(text) if like is not None else int(text)


def run(variant: str, size: int, seconds: float, stop_frame: int) -> dict:
    sim, record = simulated_tilt_series("nanorod", n_frames=240, size=size, dose_e_per_A2=3000.0, seed=0)
    truth = truth_from_record(record)
    cfg, threads = configure(variant)
    speed = sim.times_s[-1] / seconds
    estimates = []
    t0 = time.monotonic()
    dip = OnlineDip(cfg, on_estimate=lambda e: estimates.append((time.monotonic() - t0, e)))
    train = dip._run

    def run_with_threads() -> None:
        torch.set_num_threads(threads)
        train()

    dip._run = run_with_threads
    dip.start_series("bench", sim.frames.shape[1:], sim.pixel_nm)
    dip.start()
    for i in range(stop_frame):
        while time.monotonic() - t0 < sim.times_s[i] / speed:
            time.sleep(0.005)
        dip.add_frame(sim.frames[i], angle_deg=float(sim.angles_deg[i]), t_s=float(sim.times_s[i]))
    end = time.monotonic() - t0
    dip.stop()
    dip.flush()
    rows = []
    for wall, e in estimates:
        f = size // e.volumes.shape[1]
        errs = [nrmse(v, block_mean(truth(t), f) if f > 1 else truth(t)) for v, t in zip(e.volumes, e.times_s)]
        rows.append((round(wall, 1), e.step, round(float(np.mean(errs)), 4), e.n_frames))

    def first_below(level: float) -> float | None:
        return next((w for w, _, err, _ in rows if err < level), None)

    before = [r for r in rows if r[0] <= end]
    return {"variant": variant or "shipped", "steps": rows[-1][1] if rows else 0,
            "first_below": {str(v): first_below(v) for v in (0.3, 0.2, 0.1)},
            "last_before_end": before[-1][2] if before else None, "after_end": rows[-1][2] if rows else None,
            "estimates": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("variants", nargs="*", default=[""])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=240.0, help="wall time of the whole 240-frame acquisition")
    ap.add_argument("--stop-frame", type=int, default=240, help="feed only this many frames (the first minutes)")
    args = ap.parse_args()
    results = [run(v, args.size, args.seconds, args.stop_frame) for v in args.variants]
    for r in results:
        print(json.dumps(r))
    print("\n| online DIP settings | steps | first < 0.3 | first < 0.2 | first < 0.1 | last before end | after end |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        fb = r["first_below"]
        cells = [f"{fb[k]:.0f} s" if fb[k] is not None else "–" for k in ("0.3", "0.2", "0.1")]
        print(f"| {r['variant']} | {r['steps']} | {' | '.join(cells)} | {r['last_before_end']} | {r['after_end']} |")


if __name__ == "__main__":
    main()
