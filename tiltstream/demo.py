"""``tiltstream demo``: the whole live pipeline on this machine with one command.

A simulated microscope publishes a dynamic phantom in (accelerated) real time; a recorder writes the
lossless stream to an NXtomo recording and the reconstruction service updates a streaming SIRT on
every frame and trains the online DIP beside it (``--no-dip``: SIRT only), publishing both for
monitors. Every volume the service publishes is scored against the simulator's ground truth at the
time it shows (:class:`~tiltstream.recon.live_scores.LiveScores`); when the series ends, the
recording is reconstructed in 4-D (moving-window SIRT) and scored the same way. The summary holds
all three: the live SIRT, the online DIP at the end of the acquisition, and the offline 4-D result.

The monitor: with a display (and without ``--no-monitor``) the pyqtgraph monitor opens in its own
process, subscribed to the service and to the simulator's frame stream, and stays open after the
demo has finished. Headless (no display, or ``QT_QPA_PLATFORM=offscreen``) the demo runs to the end
as well and renders the same panels offscreen from a monitor model it fed during the run. Writes

    OUT_DIR/recording.h5    the recorded series (NXtomo)
    OUT_DIR/result_4d.h5    volumes (T, Z, Y, X) and times_s; the live run's traces (change, scores
                            on unseen frames) in its ``live_traces`` attribute
    OUT_DIR/summary.json    what happened: frames, losses, latencies, errors against the truth
    OUT_DIR/live_scores.json  every published volume's error against the truth, with its wall time
    OUT_DIR/monitor.png     headless only: the monitor at the end of the live run (and
                            monitor_dip.png, the same showing the DIP's estimate)
"""

from __future__ import annotations

import argparse
import contextlib
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

from tiltstream._args import positive_finite, positive_float, positive_int

__all__ = ["register", "run_demo", "monitor_mode", "free_tcp_endpoint"]

log = logging.getLogger(__name__)

#: SIRT iterations of the offline 4-D result. Offline there is time to converge: at the default demo
#: (64³, 8 times, warm-started) 300 take ~9 s on 2 cores and score 0.117 mean NRMSE, better than the
#: live SIRT at its own times (0.125); 60 left it under-converged at 0.163 (benchmarks/RESULTS.md).
OFFLINE_SIRT_ITERATIONS = 300


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser("demo", help="simulated microscope + recorder + live reconstruction, end to end")
    s.add_argument("--phantom", default="nanorod", help="nanorod, nanostar, core_shell, sintering")
    s.add_argument("--size", type=positive_int, default=64, help="volume edge in voxels (default 64)")
    s.add_argument("--frames", type=positive_int, default=240, help="frames in the series (default 240)")
    s.add_argument("--dose", type=positive_finite, default=3000.0, metavar="E_PER_A2", help="dose per frame (default 3000)")
    s.add_argument("--speed", type=positive_float, default=5.0,
                   help="× real time of the simulated microscope (default 5: a 3-minute acquisition, time "
                        "for the online DIP to catch up with the live SIRT on a CPU)")
    s.add_argument("--window", type=positive_int, default=60, metavar="N",
                   help="frames per time point, live and in 4-D (default 60)")
    s.add_argument("--device", default="auto", help="auto, cpu or cuda")
    s.add_argument("--no-dip", action="store_true", help="streaming SIRT only: no online DIP")
    s.add_argument("--pub", default="tcp://127.0.0.1:0", metavar="ENDPOINT",
                   help="where monitors can subscribe to the live estimate (default: a free port)")
    s.add_argument("--out-dir", type=Path, default=Path("out/demo"), help="output folder (default out/demo)")
    s.add_argument("--no-monitor", action="store_true",
                   help="no monitor: neither the window (with a display) nor the headless monitor.png")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--curve", action="store_true",
                   help="encrypt and authenticate every socket with CURVE keys made for this run in a temp folder")
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


def monitor_mode(no_monitor: bool, display: bool) -> str | None:
    """What the demo does about the monitor: ``"window"`` where a display is available, ``"snapshot"``
    headless (``OUT_DIR/monitor.png`` at the end of the live run), None with ``--no-monitor``."""
    return None if no_monitor else ("window" if display else "snapshot")


def free_tcp_endpoint(host: str = "127.0.0.1") -> str:
    """``tcp://HOST:PORT`` with a port that is free now (for a child process to bind)."""
    import socket  # noqa: PLC0415

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"tcp://{host}:{port}"


class _Monitor:
    """The demo's monitor: a window in its own process, or (headless) a model fed in a thread and
    rendered to ``monitor.png`` at the end. Started before the simulator, so it sees the whole series."""

    def __init__(self, mode: str, recon_endpoint: str, frames_endpoint: str, out: Path, curve: Any = None) -> None:
        self.mode, self.out, self.curve = mode, out, curve
        self.recon_endpoint, self.frames_endpoint = recon_endpoint, frames_endpoint
        self.process: Any = None
        self.model: Any = None
        self.receiver: Any = None

    def start(self, publisher: Any, timeout_s: float = 30.0) -> None:
        """Start it and wait (up to ``timeout_s``) until it has subscribed to ``publisher`` (the
        service's PUB socket, whose thread counts subscriptions)."""
        joined = publisher.new_subscribers
        if self.mode == "window":
            from tiltstream.viz.app import launch_monitor  # noqa: PLC0415

            self.process = launch_monitor(self.recon_endpoint, self.frames_endpoint, detach=True, out_dir=self.out,
                                          curve=self.curve)
            print(f"demo: monitor window opened (pid {self.process.pid}); it stays open after the demo",
                  flush=True)
        else:
            from tiltstream.viz.model import ViewModel  # noqa: PLC0415
            from tiltstream.viz.receiver import StreamReceiver  # noqa: PLC0415

            self.model = ViewModel(recon_endpoint=self.recon_endpoint, frames_endpoint=self.frames_endpoint)
            self.receiver = StreamReceiver(self.model, self.recon_endpoint, self.frames_endpoint,
                                           curve=self.curve).start()
        deadline = time.monotonic() + timeout_s
        while publisher.new_subscribers == joined:
            if self.process is not None and self.process.poll() is not None:
                log.warning("the monitor exited at start (code %s); the demo goes on without it",
                            self.process.returncode)
                return
            if time.monotonic() > deadline:
                log.warning("the monitor did not connect within %.0f s; the demo goes on", timeout_s)
                return
            time.sleep(0.05)

    def settle(self, quiet_s: float = 0.5, timeout_s: float = 5.0) -> None:
        """Headless: let the last published messages reach the model (before the service closes)."""
        if self.receiver is None:
            return
        deadline = time.monotonic() + timeout_s
        seen, since = self.receiver.received, time.monotonic()
        while time.monotonic() < deadline and time.monotonic() - since < quiet_s and self.receiver.running:
            time.sleep(0.05)
            if self.receiver.received != seen:
                seen, since = self.receiver.received, time.monotonic()

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()

    def finish(self) -> dict[str, Any]:
        """Headless: render ``monitor.png``. Returns what the summary says about the monitor.

        The snapshot is a by-product: if the monitor's receiver failed or the rendering does, the
        error is logged and reported in the summary, and the demo goes on to its 4-D result.
        """
        if self.mode == "window":
            return {"mode": "window", "pid": None if self.process is None else self.process.pid}
        from tiltstream.viz.app import render_snapshot  # noqa: PLC0415

        try:
            self.stop()  # re-raises what the receiver thread died of
            path = render_snapshot(self.model, self.out / "monitor.png")
            dip_path = None
            if self.model.dip_available:  # the same monitor switched to the DIP's estimate
                self.model.set_source("dip")
                dip_path = str(render_snapshot(self.model, self.out / "monitor_dip.png"))
        except Exception as exc:  # noqa: BLE001 - reported, see the docstring
            log.warning("monitor snapshot failed: %s: %s", type(exc).__name__, exc)
            return {"mode": "snapshot", "snapshot": None, "error": f"{type(exc).__name__}: {exc}"}
        return {"mode": "snapshot", "snapshot": str(path), "snapshot_dip": dip_path,
                "status": self.model.status().summary()}


class _DemoKeys:
    """CURVE keys for one encrypted demo run, in a temp folder removed afterwards.

    ``server`` is the pair of the recorder, the service and the simulator (every socket that binds,
    and the simulator's connecting PUSH sockets); ``client`` the monitor's. The allowed folder holds
    both public keys.
    """

    def __init__(self) -> None:
        import tempfile  # noqa: PLC0415

        from tiltstream.cmd_keys import make_keys  # noqa: PLC0415
        from tiltstream.stream.sockets import CurveClientConfig, CurveConfig  # noqa: PLC0415

        self._tmp = tempfile.TemporaryDirectory(prefix="tiltstream-demo-keys-")
        root = Path(self._tmp.name)
        self.server_public, self.server_secret = make_keys(root, "server")
        client_public, client_secret = make_keys(root, "client")
        self.allowed = root / "allowed"
        self.allowed.mkdir()
        for public in (self.server_public, client_public):
            (self.allowed / public.name).write_bytes(public.read_bytes())
        self.server = CurveConfig(self.server_secret, self.allowed)
        self.monitor = CurveClientConfig(client_secret, self.server_public)

    def sim_flags(self) -> list[str]:
        return ["--curve-key", str(self.server_secret), "--curve-server-key", str(self.server_public),
                "--curve-allowed", str(self.allowed)]

    def cleanup(self) -> None:
        self._tmp.cleanup()


def run_demo(args: argparse.Namespace) -> dict:
    from tiltstream.recon.batch import BatchParams, default_times, reconstruct_4d  # noqa: PLC0415
    from tiltstream.recon.dip.online import OnlineDipConfig  # noqa: PLC0415
    from tiltstream.recon.engine import EngineConfig  # noqa: PLC0415
    from tiltstream.recon.live_scores import LiveScores  # noqa: PLC0415
    from tiltstream.recon.scoring import nrmse, nrmse_over_time  # noqa: PLC0415
    from tiltstream.recon.service import ReconService  # noqa: PLC0415
    from tiltstream.recon.streaming import StreamingParams  # noqa: PLC0415
    from tiltstream.recon.windowed import Window  # noqa: PLC0415
    from tiltstream.stream.readers import read_series  # noqa: PLC0415
    from tiltstream.stream.recorder import Recorder  # noqa: PLC0415
    from tiltstream.stream.results import write_result  # noqa: PLC0415
    from tiltstream.stream.sockets import tcp_endpoint  # noqa: PLC0415
    from tiltstream.simulate import truth_from_recording  # noqa: PLC0415
    from tiltstream.viz.app import display_available  # noqa: PLC0415 (Qt-free)

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    recording, result_path = out / "recording.h5", out / "result_4d.h5"
    for stale in out.glob("recording*.h5"):
        stale.unlink()
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    config = EngineConfig(streaming=StreamingParams(window_frames=args.window),
                          device=args.device)
    keys = _DemoKeys() if getattr(args, "curve", False) else None
    server_curve = None if keys is None else keys.server
    recorder = Recorder(tcp_endpoint(0), recording, bind=True, overwrite=True, curve=server_curve)
    dip = None if getattr(args, "no_dip", False) else OnlineDipConfig(device=args.device)
    scores = LiveScores()
    service = ReconService(tcp_endpoint(0), args.pub, config, bind=True, curve=server_curve, pub_curve=server_curve,
                           dip=dip, observer=scores.observe)
    if keys is not None:
        print(f"demo: CURVE on: every socket encrypted, keys in {keys.allowed.parent}", flush=True)
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
    if keys is not None:
        cmd += keys.sim_flags()
    mode = monitor_mode(args.no_monitor, display_available())
    monitor = None
    if mode is not None:  # the raw frames for the monitor: lossy PUB, never slows the simulator down
        monitor = _Monitor(mode, service.pub_endpoint, free_tcp_endpoint(), out,
                           curve=None if keys is None else keys.monitor)
        cmd += ["--pub", monitor.frames_endpoint]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    try:
        if monitor is not None:
            monitor.start(service.publisher)
        sim = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600, check=False)
        if sim.returncode != 0:
            raise RuntimeError(f"simulated microscope failed ({sim.returncode}): {sim.stderr.strip()[-2000:]}")
        rec_stats = rec_thread.result(timeout=300)
        svc_stats = svc_thread.result(timeout=300)
        if monitor is not None:
            monitor.settle()
    except BaseException:
        if monitor is not None:
            with contextlib.suppress(Exception):  # the error that stopped the demo comes first
                monitor.stop()
        raise
    finally:
        recorder.close()
        service.close()
        scores.close()
        if keys is not None and (monitor is None or monitor.mode != "window"):
            keys.cleanup()  # a monitor window (own process) may still need them to reconnect
    live_volume = service.engine.estimator.volume()
    t_live = time.perf_counter() - t_start
    monitor_info = {"mode": None} if monitor is None else monitor.finish()

    torch.set_num_threads(threads)  # the live service kept torch to one thread; batch work uses them all
    series = read_series(recording)
    window = Window(frames=args.window)
    times = default_times(series.times_s, window)
    params = BatchParams(method="sirt", iterations=OFFLINE_SIRT_ITERATIONS, window_frames=args.window)
    volumes = reconstruct_4d(series.frames, series.angles_deg, series.times_s, times, params, device=args.device)
    write_result(result_path, volumes, times, overwrite=True,
                 attrs={"method": "sirt", "parameters": params.as_dict(), "input_path": str(recording),
                        "voxel_nm": series.pixel_nm or float("nan"), "live_traces": scores.trace_arrays()})
    truth = truth_from_recording(recording)
    truth_4d = nrmse_over_time(volumes, times, truth)
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
        "live_final_nrmse": nrmse(live_volume, truth(service.engine.estimator.time_s)),
        **scores.summary(),
        "result_4d": {"path": str(result_path), "iterations": params.iterations,
                      "times_s": [round(float(t), 2) for t in times],
                      "nrmse": [round(e, 4) for e in truth_4d], "mean_nrmse": float(np.mean(truth_4d))},
        "recording": str(recording),
        "monitor": monitor_info,
        "curve": keys is not None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "live_scores.json").write_text(json.dumps(scores.rows()))
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
    sirt, dip = s.get("live_sirt"), s.get("online_dip")
    if sirt:
        print(f"demo: live SIRT, {sirt['volumes_scored']} published volumes scored at their own times: mean NRMSE "
              f"{sirt['mean_nrmse']:.3f}, last {sirt['last_nrmse']:.3f}")
    if dip:
        beat = dip["beats_live_sirt_wall_s"]
        print(f"demo: online DIP, {dip['estimates_scored']} estimates: first after {dip['first_estimate_wall_s']:.0f} s "
              f"(NRMSE {dip['first_estimate_nrmse']:.3f}), "
              + ("never better than the live SIRT" if beat is None else f"better than the live SIRT from {beat:.0f} s")
              + f", at the end of the acquisition {dip['at_end_nrmse']:.3f}")
    r = s["result_4d"]
    print(f"demo: 4-D moving-window SIRT ({r['iterations']} iterations) at {len(r['times_s'])} times, "
          f"mean NRMSE vs truth {r['mean_nrmse']:.3f} "
          f"-> {r['path']}")
    if s["monitor"].get("snapshot"):
        print(f"demo: monitor snapshot (headless) in {s['monitor']['snapshot']}")
    elif s["monitor"].get("error"):
        print(f"demo: warning: no monitor snapshot ({s['monitor']['error']})", file=sys.stderr)
    print(f"demo: summary in {Path(s['recording']).parent / 'summary.json'}")
    return 0
