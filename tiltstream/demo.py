"""``tiltstream demo``: the whole live pipeline on this machine with one command.

A simulated microscope publishes a dynamic phantom in (accelerated) real time; a recorder writes the
lossless stream to an NXtomo recording and the reconstruction service updates a streaming SIRT on
every frame and publishes it for monitors. When the series ends, the recording is reconstructed in
4-D (moving-window SIRT) and both the live estimate and the 4-D result are scored against the
simulator's ground truth. Headless-safe: everything runs without a display and writes

    OUT_DIR/recording.h5    the recorded series (NXtomo)
    OUT_DIR/result_4d.h5    volumes (T, Z, Y, X) and times_s
    OUT_DIR/summary.json    what happened: frames, losses, latencies, errors against the truth
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tiltstream._args import positive_float, positive_int

__all__ = ["register", "run_demo"]

log = logging.getLogger(__name__)


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("demo", help="simulated microscope + recorder + live reconstruction, end to end")
    s.add_argument("--phantom", default="nanorod", help="nanorod, nanostar, core_shell, sintering")
    s.add_argument("--size", type=positive_int, default=64, help="volume edge in voxels (default 64)")
    s.add_argument("--frames", type=positive_int, default=240, help="frames in the series (default 240)")
    s.add_argument("--dose", type=float, default=3000.0, metavar="E_PER_A2", help="dose per frame (default 3000)")
    s.add_argument("--speed", type=positive_float, default=40.0,
                   help="× real time of the simulated microscope (default 40)")
    s.add_argument("--window", type=positive_int, default=60, metavar="N",
                   help="frames per time point, live and in 4-D (default 60)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--pub", default="tcp://127.0.0.1:0", metavar="ENDPOINT",
                   help="where monitors can subscribe to the live estimate (default: a free port)")
    s.add_argument("--out-dir", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=cmd_demo)
    return s


class _Thread(threading.Thread):
    """A worker whose exception is re-raised by :meth:`result` (background errors are not lost)."""

    def __init__(self, name: str, fn, *args, **kw):
        super().__init__(name=name, daemon=True)
        self._fn, self._args, self._kw = fn, args, kw
        self.value, self.error = None, None

    def run(self) -> None:
        try:
            self.value = self._fn(*self._args, **self._kw)
        except BaseException as exc:  # noqa: BLE001 - surfaced by result()
            self.error = exc

    def result(self, timeout: float | None = None):
        self.join(timeout)
        if self.is_alive():
            raise RuntimeError(f"{self.name} did not finish in {timeout} s")
        if self.error is not None:
            raise self.error
        return self.value


def _nrmse(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def run_demo(args: argparse.Namespace) -> dict:
    from tiltstream.recon.batch import BatchParams, default_times, reconstruct_4d  # noqa: PLC0415
    from tiltstream.recon.engine import EngineConfig  # noqa: PLC0415
    from tiltstream.recon.service import ReconService  # noqa: PLC0415
    from tiltstream.recon.streaming import StreamingParams  # noqa: PLC0415
    from tiltstream.recon.windowed import Window  # noqa: PLC0415
    from tiltstream.stream.readers import read_series  # noqa: PLC0415
    from tiltstream.stream.recorder import Recorder  # noqa: PLC0415
    from tiltstream.stream.results import write_result  # noqa: PLC0415
    from tiltstream.stream.sockets import tcp_endpoint  # noqa: PLC0415
    from tiltstream.simulate import truth_from_recording  # noqa: PLC0415

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recording, result_path = out / "recording.h5", out / "result_4d.h5"
    for stale in out.glob("recording*.h5"):
        stale.unlink()
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    config = EngineConfig(streaming=StreamingParams(window_frames=args.window),
                          device=args.device)
    recorder = Recorder(tcp_endpoint(0), recording, bind=True, overwrite=True)
    service = ReconService(tcp_endpoint(0), args.pub, config, bind=True)
    print(f"demo: monitors can subscribe to {service.pub_endpoint}", flush=True)
    rec_thread = _Thread("recorder", recorder.run, until_end=True, idle_timeout_s=120.0)
    svc_thread = _Thread("recon", service.run, until_end=True, idle_timeout_s=120.0)
    rec_thread.start()
    svc_thread.start()
    # The simulated microscope runs in its own process, as a real one would on its own PC, with one
    # compute thread so it does not fight the reconstruction for this machine's cores.
    cmd = [sys.executable, "-m", "tiltstream", "sim", "--phantom", args.phantom, "--size", str(args.size),
           "--frames", str(args.frames), "--dose", str(args.dose), "--speed", str(args.speed),
           "--seed", str(args.seed), "--connect", "--push", f"{recorder.endpoint},{service.frames_endpoint}",
           "--send-timeout", "60"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        sim = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
        if sim.returncode != 0:
            raise RuntimeError(f"simulated microscope failed ({sim.returncode}): {sim.stderr.strip()[-2000:]}")
        rec_stats = rec_thread.result(timeout=300)
        svc_stats = svc_thread.result(timeout=300)
    finally:
        recorder.close()
        service.close()
    live_volume = service.engine.estimator.volume()
    t_live = time.perf_counter() - t_start

    torch.set_num_threads(threads)  # the live service kept torch to one thread; batch work uses them all
    series = read_series(recording)
    window = Window(frames=args.window)
    times = default_times(series.times_s, window)
    params = BatchParams(method="sirt", iterations=60, window_frames=args.window)
    volumes = reconstruct_4d(series.frames, series.angles_deg, series.times_s, times, params, device=args.device)
    write_result(result_path, volumes, times, overwrite=True,
                 attrs={"method": "sirt", "parameters": params.as_dict(), "input_path": str(recording),
                        "voxel_nm": series.pixel_nm or float("nan")})
    truth = truth_from_recording(recording)
    truth_4d = [_nrmse(v, truth(float(t))) for v, t in zip(volumes, times)]
    t_end = float(series.times_s[-1])
    summary = {
        "phantom": args.phantom,
        "size": args.size,
        "frames_published": series.n_frames if rec_stats.missing == 0 else rec_stats.last_seq + 1,
        "frames_recorded": rec_stats.frames_written,
        "frames_reconstructed_live": svc_stats.frames_received,
        "series_duration_s": t_end,
        "live_wall_s": round(t_live, 2),
        "live": svc_stats.summary(),
        "live_final_nrmse": _nrmse(live_volume, truth(t_end)),
        "result_4d": {"path": str(result_path), "times_s": [round(float(t), 2) for t in times],
                      "nrmse": [round(e, 4) for e in truth_4d], "mean_nrmse": float(np.mean(truth_4d))},
        "recording": str(recording),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def cmd_demo(args: argparse.Namespace) -> int:
    s = run_demo(args)
    live = s["live"]
    lost = s["frames_published"] - s["frames_recorded"]
    print(f"demo: {s['frames_published']} frames of a {s['phantom']} ({s['size']}³) published over "
          f"{s['series_duration_s']:.0f} s of simulated time in {s['live_wall_s']:.1f} s; "
          f"recorded {s['frames_recorded']} (lost {lost}), reconstructed live {s['frames_reconstructed_live']}")
    print(f"demo: live streaming SIRT: update {live['update_ms_p50']:.1f} ms (median), latency p50 "
          f"{live['latency_ms_p50']:.0f} ms / p99 {live['latency_ms_p99']:.0f} ms; final NRMSE vs truth "
          f"{s['live_final_nrmse']:.3f}")
    r = s["result_4d"]
    print(f"demo: 4-D moving-window SIRT at {len(r['times_s'])} times, mean NRMSE vs truth {r['mean_nrmse']:.3f} "
          f"-> {r['path']}")
    print(f"demo: summary in {Path(s['recording']).parent / 'summary.json'}")
    return 0
