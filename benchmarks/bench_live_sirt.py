"""Why the live streaming SIRT scored worse than the offline windowed SIRT of the same frames.

    python benchmarks/bench_live_sirt.py [--size 48] [--frames 240] [--configs default,idle8,...]

A simulated dynamic nanorod (tiltstream.sim, dose 3000 e⁻/Å² per frame) is folded frame by frame
into a :class:`~tiltstream.recon.streaming.StreamingSirt` (no sockets; one torch thread). After
every 20th frame (window full) the live estimate is compared with the offline SIRT (100 iterations)
of exactly the frames in its window, both against the ground truth

- at the newest frame's time (what the live estimate used to be published and scored at), and
- at the window's mean time (the time a volume of those frames shows).

Each configuration varies one cause: ordered-subset steps per frame (``+k``: k more steps after each
update, as idle-time refinement gives), subset size, relaxation λ, window length, forgetting.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

CONFIGS = {
    # name: (StreamingParams overrides, extra steps after each frame)
    "default-old": (dict(window_frames=64, relaxation=1.0), 0),
    "+3": (dict(window_frames=64, relaxation=1.0), 3),
    "+10": (dict(window_frames=64, relaxation=1.0), 10),
    "+40": (dict(window_frames=64, relaxation=1.0), 40),
    "subset16": (dict(window_frames=64, subset_size=16, relaxation=1.0), 0),
    "subset4": (dict(window_frames=64, subset_size=4, relaxation=1.0), 0),
    "steps2": (dict(window_frames=64, steps_per_update=2, relaxation=1.0), 0),
    "λ1.5": (dict(window_frames=64, relaxation=1.5), 0),
    "λ1.8": (dict(window_frames=64, relaxation=1.8), 0),
    "λ1.5+3": (dict(window_frames=64, relaxation=1.5), 3),
    "λ1.5+64": (dict(window_frames=64, relaxation=1.5), 64),
    "λ1.8+40": (dict(window_frames=64, relaxation=1.8), 40),
    "window32+3": (dict(window_frames=32, relaxation=1.0), 3),
    "half-life60s+3": (dict(window_frames=64, half_life_s=60.0, relaxation=1.0), 3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--frames", type=int, default=240)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()
    from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
    from tiltstream.recon.projector import operator
    from tiltstream.recon.scoring import nrmse
    from tiltstream.recon.sirt import sirt
    from tiltstream.recon.streaming import StreamingParams, StreamingSirt
    from tiltstream.sim.recipe import simulated_tilt_series, truth_from_record

    torch.set_num_threads(1)
    n, size = args.frames, args.size
    sim, record = simulated_tilt_series("nanorod", n_frames=n, size=size, dose_e_per_A2=3000.0, seed=0)
    truth = truth_from_record(record)
    frames, angles, times = sim.frames, sim.angles_deg, sim.times_s
    vol = VolumeGeometry((size, size, size))
    print(f"{n} frames of {size}², {times[-1]:.0f} s; scored after frames {list(range(80, n, 20))}")
    print("| configuration | update median (ms) | live vs truth at newest frame | live vs truth at window mean "
          "| offline SIRT of the same frames | live / offline |\n|---|---|---|---|---|---|")
    offline: dict[tuple[int, int], np.ndarray] = {}
    for name in args.configs.split(","):
        overrides, extra = CONFIGS[name]
        est = StreamingSirt((size, size, size), StreamingParams(**overrides), device="cpu")
        updates, rows = [], []
        for i in range(n):
            t0 = time.perf_counter()
            est.push(frames[i], angles[i], times[i], seq=i)
            updates.append(time.perf_counter() - t0)
            if extra:
                est.update(steps=extra)
            if i >= 80 and i % 20 == 0:
                seqs = np.array(est.window_seqs)
                key = (int(seqs[0]), int(seqs[-1]))
                if key not in offline:
                    A = operator(vol, ProjectionGeometry(angles[seqs], frames.shape[1:]), device="cpu")
                    offline[key] = sirt(A, frames[seqs], 100)
                x, t_own = est.volume(), est.time_s
                rows.append((nrmse(x, truth(times[i])), nrmse(x, truth(t_own)),
                             nrmse(offline[key], truth(float(np.mean(times[seqs]))))))
        r = np.mean(rows, axis=0)
        print(f"| {name} | {1e3 * np.median(updates):.1f} | {r[0]:.4f} | {r[1]:.4f} | {r[2]:.4f} | "
              f"{r[1] / r[2]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
