"""Live reconstruction: streaming-SIRT update time per frame and publish → updated-volume latency.

    python benchmarks/bench_streaming.py [--size 128] [--frames 120] [--rate 4] [--device cpu]

A sender thread publishes a simulated dynamic nanorod (tiltstream.sim) at ``--rate`` frames/s over a
real tcp socket to the reconstruction service (recon/service.py, default settings: 64-frame window,
8-frame subsets, 1 step per update, refinement while idle) running in this process; a monitor subscribes to its PUB
socket. Reported: update time per frame (median, p90), receive → estimate-updated latency per frame
(service side, every frame), send → metrics-received latency (end to end, for the frame each update
ends with), and, as the reference in the same run, one full-window batch SIRT iteration (what
re-running SIRT over the window would cost per iteration). Goals (live-pipeline issue) at 128³ on the
2-core CPU: update ≤ 50 ms median, latency p99 ≤ 250 ms at 4 frames/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import threading
import time

import numpy as np
import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=120)
    p.add_argument("--rate", type=float, default=4.0, help="frames per second")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()

    from tiltstream.recon import operator, projection_geometry, volume_geometry
    from tiltstream.recon.engine import EngineConfig
    from tiltstream.recon.service import ReconService
    from tiltstream.recon.sirt import sirt
    from tiltstream.recon.streaming import StreamingParams
    from tiltstream.sim import make_phantom, simulate_series
    from tiltstream.stream.protocol import EndMsg, FrameMsg, MetricsMsg, StartMsg
    from tiltstream.stream.sockets import tcp_endpoint
    from tiltstream.stream.transport import FrameSender, Subscriber

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

    cfg = EngineConfig(streaming=StreamingParams(window_frames=64, subset_size=8, steps_per_update=1),
                       device=args.device)
    sent_at: dict[int, float] = {}
    e2e: list[float] = []
    with FrameSender(tcp_endpoint(0)) as tx:
        svc = ReconService(tx.endpoint, tcp_endpoint(0), cfg)
        stop = threading.Event()
        runner = threading.Thread(target=lambda: svc.run(stop, until_end=True), daemon=True)
        runner.start()
        with Subscriber(svc.pub_endpoint, rcvhwm=100) as sub:
            def monitor() -> None:
                while not stop.is_set():
                    got = sub.recv_latest_by_type(timeout_ms=50) or {}
                    m = got.get("metrics")
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

    upd = np.asarray(stats.update_s[: args.frames]) * 1e3
    lat = np.asarray(stats.latencies_s) * 1e3
    e2e_ms = np.asarray(e2e) * 1e3
    truth = ph.contrast(float(s.times_s[-1]))
    err = float(np.linalg.norm(svc.engine.estimator.volume() - truth) / np.linalg.norm(truth))
    print(f"\n{time.strftime('%Y-%m-%d')}, {platform.node()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
          f"device {args.device}; {args.size}³, {args.frames} frames at {args.rate:g} frames/s over tcp, "
          f"window 64 frames, subsets of 8, 1 step per update (idle time refines), torch threads in the service: 1\n")
    print("| quantity | value |")
    print("|---|---|")
    print(f"| streaming update, median / p90 (ms) | {np.median(upd):.1f} / {np.percentile(upd, 90):.1f} |")
    print(f"| receive → updated latency, p50 / p99 (ms, {lat.size} frames) | "
          f"{np.percentile(lat, 50):.1f} / {np.percentile(lat, 99):.1f} |")
    if e2e_ms.size:
        print(f"| send → metrics received, p50 / p99 (ms, {e2e_ms.size} frames) | "
              f"{np.percentile(e2e_ms, 50):.1f} / {np.percentile(e2e_ms, 99):.1f} |")
    print(f"| reference: one batch SIRT iteration over the 64-frame window (ms) | {1e3 * batch_iter:.1f} |")
    print(f"| frames received / rejected | {stats.frames_received} / {stats.summary()['messages_rejected']} |")
    print(f"| final NRMSE vs truth at the last frame's time | {err:.3f} |")


if __name__ == "__main__":
    main()
