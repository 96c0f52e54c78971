"""Live reconstruction: streaming-SIRT update time per frame and publish → updated-volume latency.

    python benchmarks/bench_streaming.py [--size 128] [--frames 120] [--rate 4] [--device cpu] [--dip]

A sender thread publishes a simulated dynamic nanorod (tiltstream.sim) at ``--rate`` frames/s over a
real tcp socket to the reconstruction service (recon/service.py, default settings: 64-frame window,
8-frame subsets, λ 1.5, at least 1 step per update and more within a 30 ms budget, refinement while
idle; ``--one-step``: also exactly 1 step per update) running in this process; a monitor subscribes to its PUB
socket. Reported: update time per frame (median, p90), receive → estimate-updated latency per frame
(service side, every frame), send → metrics-received latency (end to end, for the frame each update
ends with), and, as the reference in the same run, one full-window batch SIRT iteration (what
re-running SIRT over the window would cost per iteration). Goals (live-pipeline issue) at 128³ on the
2-core CPU: update ≤ 50 ms median, latency p99 ≤ 250 ms at 4 frames/s. With ``--dip`` the same
stream runs a second time with the online DIP training in the service (DIP issue: it must not delay
the SIRT path or frame intake), and the ratios of the two runs are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import torch


def run_service(s, args, dip=None, budget="default"):
    """Stream ``s`` at ``args.rate`` through a ReconService (optionally with the online DIP); returns
    (stats, final SIRT volume, end-to-end latencies in s, DIP metrics seen)."""
    from tiltstream.recon.engine import EngineConfig
    from tiltstream.recon.service import ReconService
    from tiltstream.recon.streaming import StreamingParams
    from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, StartMsg
    from tiltstream.stream.sockets import tcp_endpoint
    from tiltstream.stream.transport import FrameSender, Subscriber

    dip_seen: list[dict] = []
    extra = {} if budget == "default" else {"update_budget_s": budget}
    cfg = EngineConfig(streaming=StreamingParams(window_frames=64, subset_size=8, steps_per_update=1),
                       device=args.device, **extra)
    sent_at: dict[int, float] = {}
    e2e: list[float] = []
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), cfg, dip=dip)
        stop = threading.Event()
        runner = threading.Thread(target=lambda: svc.run(stop, until_end=True), daemon=True)
        runner.start()
        with Subscriber(svc.pub_endpoint, rcvhwm=100) as sub:
            def monitor() -> None:
                while not stop.is_set():
                    got = sub.recv_latest_by_type(timeout_ms=50) or {}
                    m = got.get("metrics")
                    if isinstance(m, MetricsMsg) and "dip_steps" in m.values:
                        dip_seen.append(dict(m.values))
                    if isinstance(m, MetricsMsg) and "last_frame_seq" in m.values:
                        seq = int(m.values["last_frame_seq"])
                        if seq in sent_at:
                            e2e.append(time.monotonic() - sent_at.pop(seq))

            mon = threading.Thread(target=monitor, daemon=True)
            mon.start()
            time.sleep(0.5)
            sid = "bench" + "0" * 27
            tx.send(StartMsg(stream_id=sid, frame_shape=s.frames.shape[1:], dtype="float32", scheme="golden"))
            start = time.monotonic()
            for i in range(args.frames):
                due = start + i / args.rate
                time.sleep(max(0.0, due - time.monotonic()))
                sent_at[i] = time.monotonic()
                tx.send(FrameMsg(seq=i, stream_id=sid, angle_deg=float(s.angles_deg[i]), t_s=float(s.times_s[i]),
                                 exposure_s=0.1, data=s.frames[i]))
            tx.send(EndMsg(stream_id=sid, n_frames=args.frames, reason="complete"))
            runner.join(120)
            stop.set()
            mon.join(5)
        stats = svc.stats
        svc.close()

    est = svc.engine.estimator
    return stats, (est.volume(), est.time_s), e2e, dip_seen


def report(label, stats, estimate, e2e, args, phantom):
    vol, t_est = estimate
    truth = phantom.contrast(t_est)  # the time the estimate shows: its window's mean time
    upd = np.asarray(stats.update_s[: args.frames]) * 1e3
    lat = np.asarray(stats.latencies_s) * 1e3
    e2e_ms = np.asarray(e2e) * 1e3
    err = float(np.linalg.norm(vol - truth) / np.linalg.norm(truth))
    cells = [f"{np.median(upd):.1f} / {np.percentile(upd, 90):.1f}",
             f"{np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f}",
             f"{np.percentile(e2e_ms, 50):.1f} / {np.percentile(e2e_ms, 99):.1f}" if e2e_ms.size else "–",
             f"{stats.frames_received} / {stats.summary()['messages_rejected']}", f"{err:.3f}"]
    print(f"| {label} | " + " | ".join(cells) + " |")
    return np.median(upd), np.percentile(lat, 99)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--rate", type=float, default=4.0, help="frames per second")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dip", action="store_true", help="run again with the online DIP training beside it")
    p.add_argument("--one-step", action="store_true",
                   help="run again with exactly one ordered-subset step per update (update_budget_s=None)")
    args = p.parse_args()

    from tiltstream.recon import operator, projection_geometry, volume_geometry
    from tiltstream.recon.sirt import sirt
    from tiltstream.sim import make_phantom, simulate_series

    t0 = time.perf_counter()
    probe = simulate_series(make_phantom("nanorod", size=args.size, static=True), n_frames=args.frames, blur=False)
    ph = make_phantom("nanorod", size=args.size, duration_s=float(probe.times_s[-1]))
    s = simulate_series(ph, n_frames=args.frames, blur=False, dose_e_per_A2=3000.0, rng=np.random.default_rng(0))
    print(f"simulated {args.size}³ × {args.frames} in {time.perf_counter() - t0:.1f} s")

    # reference in the same run: one batch SIRT iteration over a full 64-frame window
    A = operator(volume_geometry((args.size,) * 3),
                 projection_geometry(s.angles_deg[:64], det_shape=s.frames.shape[1:]), device=args.device)
    y = torch.as_tensor(s.frames[:64], device=A.device)
    sirt(A, y, 1)
    t0 = time.perf_counter()
    sirt(A, y, 5)
    batch_iter = (time.perf_counter() - t0) / 5

    runs = [("streaming SIRT (30 ms update budget, default)", None, "default")]
    if args.one_step:
        runs.append(("streaming SIRT, 1 step per update (no budget)", None, None))
    if args.dip:
        from tiltstream.recon.dip.online import OnlineDipConfig

        runs.append(("streaming SIRT + online DIP", OnlineDipConfig(device=args.device, publish_period_s=5.0),
                     "default"))
    results = [(label, run_service(s, args, dip, budget)) for label, dip, budget in runs]
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"device {args.device}; {args.size}³, {args.frames} frames at {args.rate:g} frames/s over tcp, "
          f"window 64 frames, subsets of 8 (idle time refines), torch threads in the service: 1\n")
    print("| service | update median / p90 (ms) | receive → updated p50 / p99 (ms) | send → metrics received "
          "p50 / p99 (ms) | frames received / rejected | final NRMSE (SIRT, at its own time) |")
    print("|---|---|---|---|---|---|")
    rows = [report(label, stats, est, e2e, args, ph) for label, (stats, est, e2e, _) in results]
    print(f"\nreference: one batch SIRT iteration over the 64-frame window: {1e3 * batch_iter:.1f} ms")
    if args.dip:
        (upd0, p99_0), (upd1, p99_1) = rows[0], rows[-1]
        stats, _, _, dip_seen = results[-1][1]
        print(f"with the online DIP: update median ×{upd1 / upd0:.2f}, latency p99 ×{p99_1 / p99_0:.2f}; "
              f"DIP estimates published: {stats.dip_estimates}"
              + (f", last seen by the monitor: {dip_seen[-1]}" if dip_seen else ""))

if __name__ == "__main__":
    main()
