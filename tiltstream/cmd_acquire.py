"""``tiltstream sim | replay | watch``: publish a live frame stream.

Usage::

    tiltstream sim --phantom nanorod --size 64 --frames 240 --dose 50 --speed 10 \\
        --push tcp://127.0.0.1:5555,tcp://127.0.0.1:5557 --pub tcp://127.0.0.1:5556
    tiltstream replay run.h5 --speed 5 --push tcp://127.0.0.1:5555
    tiltstream watch /data/session1 --pattern '*.tif' --angle-from filename --push tcp://127.0.0.1:5555

``--push`` binds one lossless PUSH socket per endpoint (one per consumer: recorder, reconstructor;
they connect, e.g. ``tiltstream record --connect tcp://127.0.0.1:5555``); a full consumer queue
pauses the source (backpressure), nothing is dropped. ``--pub`` binds the viewers' PUB socket,
which drops what a slow viewer cannot take. Ctrl-C (or SIGTERM) ends the series cleanly with
``end/1`` reason ``"stopped"``; a second Ctrl-C interrupts at once.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tiltstream._args import finite_float, nonneg_float, positive_finite, positive_int, seconds, stop_on_signals
from tiltstream._curve_args import add_curve_arguments, curve_from_args

__all__ = ["register", "add_series_options", "cmd_sim", "cmd_replay", "cmd_watch"]


def _speed(text: str) -> float:
    from tiltstream.acquire.pacing import parse_speed  # noqa: PLC0415

    try:
        return parse_speed(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI in degrees like '-70,70', got {text!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise argparse.ArgumentTypeError(f"expected finite LO,HI in degrees like '-70,70', got {text!r}")
    return lo, hi


def _add_outputs(s: argparse.ArgumentParser) -> None:
    s.add_argument("--connect", action="store_true",
                   help="connect the --push sockets to consumers that bind, instead of binding them")
    s.add_argument("--push", metavar="ENDPOINTS", default=None,
                   help="lossless PUSH endpoint(s) to bind, comma-separated, one per consumer "
                        "(e.g. tcp://127.0.0.1:5555,tcp://127.0.0.1:5557)")
    s.add_argument("--pub", metavar="ENDPOINT", default=None,
                   help="viewer PUB endpoint to bind (lossy), e.g. tcp://127.0.0.1:5556")
    s.add_argument("--send-timeout", type=seconds, default=None, metavar="S",
                   help="give up when a consumer takes nothing for S seconds (default: wait)")
    add_curve_arguments(s)


def add_series_options(s: argparse.ArgumentParser) -> None:
    """The simulated series' options, shared by ``sim`` and ``simulate``."""
    s.add_argument("--phantom", default="nanorod", help="nanorod, nanostar, core_shell, sintering (default nanorod)")
    s.add_argument("--size", type=positive_int, default=64, help="volume edge in voxels (default 64)")
    s.add_argument("--frames", type=positive_int, default=240, help="number of frames (default 240)")
    s.add_argument("--dose", type=positive_finite, default=None, metavar="E_PER_A2",
                   help="dose per frame in e-/Å² (default: noise-free)")
    s.add_argument("--scheme", choices=["golden", "linear", "incremental"], default="golden")
    s.add_argument("--tilt-range", type=_pair, default=(-70.0, 70.0), metavar="LO,HI",
                   help="degrees (default -70,70; a negative LO takes the = form: --tilt-range=-60,60)")
    s.add_argument("--exposure", type=seconds, default=0.1, metavar="S", help="exposure per frame (default 0.1 s)")
    s.add_argument("--duration", type=positive_finite, default=None, metavar="S",
                   help="duration of the shape change in s (default: the acquisition time)")
    s.add_argument("--static", action="store_true", help="freeze the phantom (no shape change)")
    s.add_argument("--drift", type=nonneg_float, default=0.0, metavar="PX_PER_S", help="random-walk drift speed")
    s.add_argument("--jitter", type=nonneg_float, default=0.0, metavar="PX", help="white per-frame jitter")
    s.add_argument("--axis-offset", type=finite_float, default=0.0, metavar="PX", help="tilt-axis offset from centre")
    s.add_argument("--seed", type=int, default=0)


def register(subparsers: Any) -> None:
    """Add the ``sim``, ``replay`` and ``watch`` sub-commands to ``subparsers``."""
    s = subparsers.add_parser("sim", help="run the simulated microscope and publish its frames live")
    add_series_options(s)
    s.add_argument("--speed", type=_speed, default=1.0, metavar="X",
                   help="factor of real time, or 'max' (default 1)")
    s.add_argument("--temperature", type=finite_float, default=25.0, metavar="C", help="start temperature (default 25 °C)")
    s.add_argument("--heating-rate", type=finite_float, default=0.0, metavar="C_PER_S", help="linear ramp (default 0)")
    s.add_argument("--temperature-limit", type=finite_float, default=None, metavar="C", help="end of the ramp")
    _add_outputs(s)
    s.set_defaults(func=cmd_sim)

    s = subparsers.add_parser("replay", help="stream a recorded tilt series as if it were acquired now")
    s.add_argument("file", type=Path, help="recording (.h5/.nxs), MRC + .rawtlt, or TIFF + CSV")
    s.add_argument("--speed", type=_speed, default=1.0, metavar="X", help="factor of real time, or 'max' (default 1)")
    s.add_argument("--start-frame", type=int, default=0, metavar="K", help="first frame to send (default 0)")
    s.add_argument("--tilt-axis-angle", type=finite_float, default=None, metavar="DEG",
                   help="in-plane tilt-axis angle of the stored frames; overrides the file")
    _add_outputs(s)
    s.set_defaults(func=cmd_replay)

    s = subparsers.add_parser("watch", help="stream frame files as acquisition software writes them into a folder")
    s.add_argument("folder", type=Path)
    s.add_argument("--pattern", default="*.tif", help="glob pattern(s), comma-separated (default *.tif)")
    s.add_argument("--angle-from", choices=["sidecar", "filename"], default="sidecar",
                   help="read angles from FRAME.json/.txt beside each frame, or from the file name")
    s.add_argument("--poll", type=seconds, default=0.2, metavar="S", help="time between scans (default 0.2 s)")
    s.add_argument("--settle", type=seconds, default=0.5, metavar="S",
                   help="a file is complete when unchanged this long (default 0.5 s)")
    s.add_argument("--sidecar-wait", type=seconds, default=5.0, metavar="S", help="wait for a sidecar (default 5 s)")
    s.add_argument("--exposure", type=seconds, default=0.0, metavar="S",
                   help="exposure when no sidecar says (0 = unknown)")
    s.add_argument("--pixel-nm", type=positive_finite, default=None, metavar="NM", help="pixel size in the sample plane")
    s.add_argument("--tilt-axis-angle", type=finite_float, default=0.0, metavar="DEG",
                   help="in-plane tilt-axis angle of the stored frames (default 0: along the rows)")
    s.add_argument("--no-existing", action="store_true", help="ignore files already in the folder")
    s.add_argument("--max-frames", type=positive_int, default=None, metavar="N", help="stop after N frames")
    s.add_argument("--idle-timeout", type=seconds, default=None, metavar="S",
                   help="stop after S seconds without a new file (default: until stopped)")
    _add_outputs(s)
    s.set_defaults(func=cmd_watch)


@contextlib.contextmanager
def _sinks(args: argparse.Namespace) -> Iterator[list[Any]]:
    """The --push (lossless) and --pub (lossy) sockets, bound now so consumers can connect; closed after."""
    import zmq  # noqa: PLC0415

    from tiltstream.acquire.sinks import close_sink, open_pub, open_push  # noqa: PLC0415

    if not args.push and not args.pub:
        raise ValueError("expected --push ENDPOINT(S) and/or --pub ENDPOINT, got neither")
    push_bind = not getattr(args, "connect", False)
    # CURVE role per socket: bound --push sockets and the --pub socket are servers, --connect ones clients.
    push_curve = curve_from_args(args, bind=push_bind) if args.push else None
    pub_curve = curve_from_args(args, bind=True) if args.pub else None
    sinks: list[Any] = []
    try:
        try:
            if args.push:
                sinks.append(open_push(args.push, bind=push_bind, curve=push_curve))
            if args.pub:
                sinks.append(open_pub(args.pub, curve=pub_curve))
        except zmq.ZMQError as exc:
            raise RuntimeError(f"{args.push or args.pub}: {exc}") from None
        yield sinks
    finally:
        for sink in sinks:
            close_sink(sink)


def _where(sinks: list[Any]) -> str:
    names = [getattr(getattr(s, "sink", s), "endpoint", None) or getattr(s, "endpoints", None) for s in sinks]
    return ", ".join(str(n) for n in names if n)


def cmd_sim(args: argparse.Namespace) -> int:
    """Run the simulated microscope; print a one-line summary."""
    from tiltstream.acquire.simulated import SimulatedMicroscope, TemperatureRamp  # noqa: PLC0415

    lo, hi = args.tilt_range
    if not lo < hi:
        raise ValueError(f"--tilt-range: expected LO < HI, got {lo},{hi}")
    ramp = TemperatureRamp(args.temperature, args.heating_rate, args.temperature_limit)
    with _sinks(args) as sinks, stop_on_signals() as stop:
        mic = SimulatedMicroscope(
            args.phantom, sink=sinks, size=args.size, n_frames=args.frames, dose=args.dose, speed=args.speed,
            seed=args.seed, scheme=args.scheme, tilt_range_deg=(lo, hi), exposure_s=args.exposure,
            duration_s=args.duration, static=args.static, drift_px_per_s=args.drift, jitter_px=args.jitter,
            axis_offset_px=args.axis_offset, temperature=ramp, send_timeout_s=args.send_timeout,
        )
        print(f"sim: publishing {args.frames} frames of {args.phantom} on {_where(sinks)}", flush=True)
        try:
            stats = mic.run(stop)
        except KeyboardInterrupt:
            print("sim: interrupted")
            return 130
    print(f"sim: {stats.n_frames} frames in {stats.wall_s:.1f} s, series {stats.stream_id}"
          f"{' (stopped)' if stats.stopped else ''}; {stats.late_frames} late (max {stats.max_lag_s:.2f} s)")
    return 0


def _check_schedule(path: Any, speed: float) -> None:
    """ValueError when ``--speed`` stretches the file's series beyond what a wait can last
    (``threading.TIMEOUT_MAX``); the file's own problems are left to the replay."""
    import threading  # noqa: PLC0415

    from tiltstream.stream.readers import describe  # noqa: PLC0415

    if math.isinf(speed):
        return
    info = describe(path)
    span = info["duration_s"] if info["duration_s"] is not None else float(info["n_frames"])
    if span / speed > threading.TIMEOUT_MAX:
        raise ValueError(f"--speed: expected a factor of real time that replays the series' {span:g} s within "
                         f"{threading.TIMEOUT_MAX:.3g} s (at least {span / threading.TIMEOUT_MAX:.3g}), got {speed:g}")


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay a file; print a one-line summary."""
    from tiltstream.acquire.replay import replay  # noqa: PLC0415

    with _sinks(args) as sinks, stop_on_signals() as stop:
        _check_schedule(args.file, args.speed)
        print(f"replay: {args.file} on {_where(sinks)}", flush=True)
        try:
            stats = replay(args.file, sinks, speed=args.speed, start_frame=args.start_frame,
                           tilt_axis_angle_deg=args.tilt_axis_angle, stop_event=stop,
                           send_timeout_s=args.send_timeout)
        except KeyboardInterrupt:
            print("replay: interrupted")
            return 130
    print(f"replay: {stats.n_frames} frames in {stats.wall_s:.1f} s, series {stats.stream_id}"
          f"{' (stopped)' if stats.stopped else ''}")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Watch a folder until stopped; print a one-line summary."""
    from tiltstream.acquire.folder import FolderWatcher  # noqa: PLC0415

    patterns = [p.strip() for p in args.pattern.split(",") if p.strip()]
    with _sinks(args) as sinks, stop_on_signals() as stop, FolderWatcher(
        args.folder, sinks, pattern=patterns, angle_from=args.angle_from, poll_s=args.poll,
        settle_s=args.settle, sidecar_wait_s=args.sidecar_wait, exposure_s=args.exposure,
        pixel_nm=args.pixel_nm, tilt_axis_angle_deg=args.tilt_axis_angle,
        include_existing=not args.no_existing, send_timeout_s=args.send_timeout,
    ) as watcher:
        print(f"watch: {args.folder} ({', '.join(patterns)}) on {_where(sinks)}", flush=True)
        try:
            n = watcher.run(stop, max_frames=args.max_frames, idle_timeout_s=args.idle_timeout)
        except KeyboardInterrupt:
            print("watch: interrupted")
            return 130
    print(f"watch: {n} frames sent, {len(watcher.rejected)} files skipped (see the log for reasons)")
    return 0
