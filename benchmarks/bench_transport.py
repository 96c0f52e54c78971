"""Transport throughput: tiltstream FrameSender→FrameReceiver vs a bare pyzmq PUSH/PULL loop.

    python benchmarks/bench_transport.py [--sizes 256 1024] [--seconds 2] [--repeats 3]
                                         [--placements threads processes] [--transports tcp inproc]

Streams float32 frames of N×N pixels over the lossless path and over a bare pyzmq loop that moves
the same bytes (the same msgpack header bytes, constant, + the raw frame buffer; ``copy=False`` on
both ends for frames ≥ 64 KiB, the size from which tiltstream's ``zero_copy`` sender skips the
copy). Both use high-water marks of 32 messages (tiltstream's default). Variants:

* ``bare``: ``send_multipart([header, buffer], copy=False)`` / ``recv_multipart(copy=False)``;
  no serialisation, no validation, no polling.
* ``tiltstream``: ``FrameSender(zero_copy=True).send(msg)`` → ``FrameReceiver.recv()``: pack
  (header validated before it is encoded, frame passed as a zero-copy view), send waiting in
  ZeroMQ up to the timeout; receive (header as bytes, frame zero-copy), unpack with full
  validation and the receiver's NaN/Inf screen of the pixels, sequence tracking, reject counting.
* ``no-finite``: as ``tiltstream`` with ``Limits(check_data_finite=False)`` at both ends (senders
  do not screen pixels by default; receivers do unless told not to).

Messages are built before the clock starts (the producer's own cost is not counted). Frames cycle
through a pool of distinct arrays larger than the CPU's last-level cache, so data is read from
memory as it would be for fresh detector frames.

Placement: ``threads`` runs sender and receiver as two threads of one process (sharing one GIL,
as in the tests; the only option for inproc); ``processes`` runs them in two worker processes
(each with its own GIL, as in a deployment where acquisition and reconstruction are separate
programs). tcp always goes over ``tcp://127.0.0.1`` with port 0.

Timing: the receiver takes the time after the last of W warm-up frames and after the last of N
timed frames, so connection set-up, warm-up and the final drain are excluded and the window is
steady-state throughput. N is sized per case (size, transport, placement, variant) from a short
probe run so that each window lasts about ``--seconds``. Each repeat runs every variant once,
back to back, in alternating order (drift on the shared machine hits all variants alike); the
table gives the median frames/s of the repeats, and as ratio the median over the repeats of the
ratio within each repeat (pairs measured seconds apart, so a load swing between repeats does not
bias it).

A single-threaded cost split (µs per frame: pack, unpack, NaN/Inf screen, sequence tracking, the
receiver's whole intake) shows where the overhead comes from. Prints Markdown for
benchmarks/RESULTS.md on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import queue
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context

import msgpack
import numpy as np
import zmq

from tiltstream.stream.messages import FrameMsg, Limits, StartMsg
from tiltstream.stream.protocol import SeqTracker, pack, unpack
from tiltstream.stream.sockets import tcp_endpoint
from tiltstream.stream.intake import Intake
from tiltstream.stream.transport import DEFAULT_HWM, FrameReceiver, FrameSender
from tiltstream.stream.validation import check_finite_data

VARIANTS = ("bare", "tiltstream", "no-finite")
ZERO_COPY_MIN = 64 * 1024
POOL_BYTES = 192 * 2**20  # > the 105 MiB L3 of the developer VM
STREAM_ID = "bench-transport"
_POOLS: dict[int, list[np.ndarray]] = {}


@dataclass(frozen=True)
class Case:
    """One session: a sender and a receiver moving ``warmup + n`` frames."""

    size: int
    transport: str  # "tcp" | "inproc"
    variant: str  # one of VARIANTS
    n: int
    warmup: int
    run_id: int = 0

    @property
    def nbytes(self) -> int:
        return self.size * self.size * 4

    @property
    def limits(self) -> Limits:
        return Limits(check_data_finite=self.variant != "no-finite")

    def endpoint(self) -> str:
        if self.transport == "tcp":
            return tcp_endpoint(0)
        return f"inproc://bench-transport-{os.getpid()}-{self.run_id}"


def frame_pool(size: int) -> list[np.ndarray]:
    """Distinct finite float32 (size, size) frames, together larger than the last-level cache."""
    if size not in _POOLS:
        rng = np.random.default_rng(size)
        count = max(4, POOL_BYTES // (size * size * 4))
        _POOLS[size] = [
            (100.0 + rng.standard_normal((size, size), dtype=np.float32)) for _ in range(count)
        ]
    return _POOLS[size]


def make_messages(size: int, count: int) -> list[FrameMsg]:
    pool = frame_pool(size)
    return [
        FrameMsg(
            seq=i, stream_id=STREAM_ID, angle_deg=-60.0 + 0.01 * (i % 12000), t_s=0.05 * i,
            exposure_s=0.05, data=pool[i % len(pool)], dose_e_per_A2=2.5, pixel_nm=0.25,
            tilt_range_deg=(-60.0, 60.0),
        )
        for i in range(count)
    ]


# ---------------------------------------------------------------------------------------------
# Session ends: each runs in a thread or a worker process; the endpoint travels through a queue.


def run_sender(case: Case, endpoints: queue.Queue) -> dict:
    total = case.warmup + case.n
    if case.variant == "bare":
        pool = frame_pool(case.size)
        header = pack(make_messages(case.size, 1)[0])[0]
        parts = [[header, memoryview(a.reshape(-1).view(np.uint8))] for a in pool]
        ctx = zmq.Context() if case.transport == "tcp" else zmq.Context.instance()
        sock = ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.SNDHWM, DEFAULT_HWM)
        sock.setsockopt(zmq.LINGER, 5000)
        sock.bind(case.endpoint())
        endpoints.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        copy = case.nbytes < ZERO_COPY_MIN
        n_pool = len(parts)
        c0 = 0.0
        for i in range(total):
            if i == case.warmup:
                c0 = time.process_time()
            sock.send_multipart(parts[i % n_pool], copy=copy)
        c1 = time.process_time()
        sock.close()
        if case.transport == "tcp":
            ctx.term()
        return {"timeouts": 0, "cpu_s": c1 - c0}
    msgs = make_messages(case.size, total)
    start = StartMsg(
        stream_id=STREAM_ID, frame_shape=(case.size, case.size), dtype="<f4", scheme="linear",
    )
    with FrameSender(
        case.endpoint(), zero_copy=True, limits=case.limits, timeout_ms=30_000,
    ) as tx:
        endpoints.put(tx.endpoint)
        if not tx.send(start):
            raise RuntimeError("send of start/1 timed out")
        c0 = 0.0
        for i, msg in enumerate(msgs):
            if i == case.warmup:
                c0 = time.process_time()
            if not tx.send(msg):
                raise RuntimeError(f"send timed out at {msg!r}")
        return {"timeouts": tx.timeouts, "cpu_s": time.process_time() - c0}


def run_receiver(case: Case, endpoints: queue.Queue) -> dict:
    endpoint = endpoints.get(timeout=60)
    clock = time.perf_counter
    last_warm = case.warmup - 1
    last = case.warmup + case.n - 1
    t0 = t1 = c0 = 0.0
    if case.variant == "bare":
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, DEFAULT_HWM)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(endpoint)
        copy = case.nbytes < ZERO_COPY_MIN
        for i in range(last + 1):
            parts = sock.recv_multipart(copy=copy)
            if i == last_warm:
                t0, c0 = clock(), time.process_time()
        t1, c1 = clock(), time.process_time()
        sock.close()
        if len(parts) != 2 or len(parts[1]) != case.nbytes:
            raise RuntimeError(f"bare: unexpected last message {[len(p) for p in parts]}")
        return {"seconds": t1 - t0, "cpu_s": c1 - c0, "rejected": 0, "missing": 0}
    with FrameReceiver(endpoint, limits=case.limits) as rx:
        first = rx.recv(timeout_ms=60_000)
        if not isinstance(first, StartMsg):
            raise RuntimeError(f"expected start/1 first, got {first!r}")
        for i in range(last + 1):
            msg = rx.recv(timeout_ms=60_000)
            if msg is None:
                raise RuntimeError(f"receive timed out after {i} frames")
            if i == last_warm:
                t0, c0 = clock(), time.process_time()
        t1, c1 = clock(), time.process_time()
        if msg.seq != last or msg.data.shape != (case.size, case.size):
            raise RuntimeError(f"unexpected last frame {msg!r}")
        stats = rx.stats()
    return {"seconds": t1 - t0, "cpu_s": c1 - c0, "rejected": stats.rejected, "missing": stats.missing}


def run_session(executor: Executor, endpoints: queue.Queue, case: Case) -> tuple[float, float]:
    """Frames per second of one session's timed window, and the CPU time per frame (µs) of the
    sender's and the receiver's processes together (with their ZeroMQ I/O threads; meaningful when
    each end is a process of its own)."""
    sent = executor.submit(run_sender, case, endpoints)
    got = executor.submit(run_receiver, case, endpoints)
    out = got.result()
    info = sent.result()
    if out["rejected"] or out["missing"] or info["timeouts"]:
        raise RuntimeError(f"{case}: lossless path lost or rejected messages: {out} {info}")
    return case.n / out["seconds"], 1e6 * (out["cpu_s"] + info["cpu_s"]) / case.n


# ---------------------------------------------------------------------------------------------
# Throughput sessions.


@dataclass
class Row:
    size: int
    transport: str
    placement: str
    n: dict[str, int]
    fps: dict[str, float]  # median over the repeats
    runs: dict[str, list[float]]  # frames/s of each repeat
    cpu: dict[str, list[float]]  # CPU µs per frame, both ends, of each repeat

    def ratio(self, variant: str) -> float:
        """Median over the repeats of (variant time / bare time) within each repeat."""
        pairs = zip(self.runs["bare"], self.runs[variant], strict=True)
        return statistics.median(bare / other for bare, other in pairs)

    def cpu_ratio(self, variant: str) -> float:
        """Median over the repeats of (variant CPU / bare CPU per frame) within each repeat."""
        pairs = zip(self.cpu["bare"], self.cpu[variant], strict=True)
        return statistics.median(other / bare for bare, other in pairs)


def measure_group(
    executor: Executor, endpoints: queue.Queue, size: int, transport: str, placement: str,
    seconds: float, repeats: int, counter: list[int],
) -> Row:
    def case(variant: str, n: int, warmup: int) -> Case:
        counter[0] += 1
        return Case(size, transport, variant, n, warmup, run_id=counter[0])

    n: dict[str, int] = {}
    for variant in VARIANTS:
        probe = 300 if size <= 256 else 60
        rate, _ = run_session(executor, endpoints, case(variant, probe, probe // 4))
        n[variant] = min(500_000, max(100, int(rate * seconds)))
    log(f"{size}² {transport} {placement}: N = {n}")
    runs: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for r in range(repeats):
        for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:  # no variant always goes first
            fps, cpu_us = run_session(executor, endpoints, case(variant, n[variant], 32 + n[variant] // 10))
            runs[variant].append(fps)
            cpu[variant].append(cpu_us)
            log(f"  repeat {r + 1} {variant:10s} {fps:10,.0f} frames/s {cpu_us:8,.1f} µs CPU/frame")
    medians = {v: statistics.median(x) for v, x in runs.items()}
    return Row(size, transport, placement, n, medians, runs, cpu)


# ---------------------------------------------------------------------------------------------
# Cost split, single-threaded.


def per_call_us(
    fn: Callable[[int], object], n_items: int, min_s: float = 0.25, repeats: int = 5
) -> float:
    """Median over repeats of the time per ``fn(i)`` call, µs; ``i`` cycles over ``n_items``."""
    loops = 1
    while True:
        t0 = time.perf_counter()
        for i in range(loops):
            fn(i % n_items)
        dt = time.perf_counter() - t0
        if dt >= min_s / 4:
            break
        loops *= 4
    loops = max(1, int(loops * min_s / dt))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for i in range(loops):
            fn(i % n_items)
        times.append((time.perf_counter() - t0) / loops)
    return statistics.median(times) * 1e6


def cost_split(size: int) -> dict[str, float]:
    pool = frame_pool(size)
    msgs = make_messages(size, len(pool))
    on, off = Limits(), Limits(check_data_finite=False)
    packed = [pack(m) for m in msgs]
    frames = [[p[0], zmq.Frame(p[1], copy=False)] for p in packed]
    out = {
        "pack (sender)": per_call_us(lambda i: pack(msgs[i], limits=on), len(msgs)),
        "NaN/Inf screen alone (frame from memory)": per_call_us(
            lambda i: check_finite_data("data", pool[i], on), len(pool)
        ),
        "unpack + validation": per_call_us(lambda i: unpack(frames[i], limits=on), len(frames)),
        "unpack, no finite check": per_call_us(
            lambda i: unpack(frames[i], limits=off), len(frames)
        ),
        "msgpack.unpackb(header) alone": per_call_us(
            lambda i: msgpack.unpackb(packed[i][0]), len(packed)
        ),
    }
    many = make_messages(size, 20_000)
    tracker = [SeqTracker()]

    def observe(i: int) -> None:
        if i == 0:
            tracker[0] = SeqTracker()
        tracker[0].observe(many[i])

    out["sequence tracking"] = per_call_us(observe, len(many))
    many_parts = [[pack(m)[0], frames[i % len(frames)][1]] for i, m in enumerate(many)]
    intake = [Intake("bench", on)]

    def accept(i: int) -> None:
        if i == 0:
            intake[0] = Intake("bench", on)
        if intake[0].accept(many_parts[i]) is None:
            raise RuntimeError(f"bench: frame {i} rejected")

    out["receiver intake (unpack, screen, seq, counts)"] = per_call_us(accept, len(many_parts))
    return out


# ---------------------------------------------------------------------------------------------
# Report.


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("tiltstream")
    except PackageNotFoundError:
        ver = "?"
    return (
        f"tiltstream {ver}, pyzmq {zmq.__version__} (libzmq {zmq.zmq_version()}), "
        f"msgpack {'.'.join(map(str, msgpack.version))}, numpy {np.__version__}, "
        f"Python {platform.python_version()}"
    )


def report(rows: list[Row], split: dict[int, dict[str, float]], args: argparse.Namespace) -> str:
    today = datetime.date.today().isoformat()
    load = "%.1f %.1f %.1f" % os.getloadavg()
    lines = [
        "## Transport throughput — `python benchmarks/bench_transport.py`",
        "",
        f"{today}, {platform.node()} ({os.cpu_count()} CPU cores, {platform.machine()}, "
        f"load average {load} at the end), {versions()}. float32 frames, HWM {DEFAULT_HWM}, "
        f"median of {args.repeats} interleaved repeats of ~{args.seconds:g} s windows after "
        "warm-up. MB/s = frame payload, 10⁶ B/s. Ratio = tiltstream time / bare pyzmq time, "
        "median of the ratios within each repeat. "
        "`no-finite`: `Limits(check_data_finite=False)` at both ends.",
        "",
        "| frame | transport | sender / receiver | N (bare / ts / no-finite) | bare frames/s "
        "| bare MB/s | tiltstream frames/s | tiltstream MB/s | ratio | no-finite frames/s "
        "| no-finite ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        mb = row.size * row.size * 4 / 1e6
        bare, ts, nf = (row.fps[v] for v in VARIANTS)
        where = "2 threads" if row.placement == "threads" else "2 processes"
        ns = " / ".join(str(row.n[v]) for v in VARIANTS)
        lines.append(
            f"| {row.size}² | {row.transport} | {where} | {ns} | {bare:,.0f} | {bare * mb:,.0f} "
            f"| {ts:,.0f} | {ts * mb:,.0f} | {row.ratio('tiltstream'):.2f}× | {nf:,.0f} "
            f"| {row.ratio('no-finite'):.2f}× |"
        )
    apart = [row for row in rows if row.placement == "processes"]
    if apart:
        lines += [
            "",
            "CPU time per frame, sender and receiver processes together (with their ZeroMQ I/O "
            "threads), µs, median of the repeats; ratio = median of tiltstream CPU / bare CPU "
            "within each repeat (less sensitive to the other jobs on the machine than throughput):",
            "",
            "| frame | transport | bare | tiltstream | ratio | no-finite | no-finite ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in apart:
            bare, ts, nf = (statistics.median(row.cpu[v]) for v in VARIANTS)
            lines.append(
                f"| {row.size}² | {row.transport} | {bare:,.1f} | {ts:,.1f} | "
                f"{row.cpu_ratio('tiltstream'):.2f}× | {nf:,.1f} | {row.cpu_ratio('no-finite'):.2f}× |"
            )
    sizes = sorted(split)
    lines += [
        "",
        "Cost split, µs per frame (single thread, no sockets, median of 5; last rows from the "
        "table above: bare pyzmq time per frame (median) / tiltstream's extra time per frame "
        "(that × (ratio − 1))):",
        "",
        "| step | " + " | ".join(f"{s}²" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for key in split[sizes[0]]:
        lines.append(f"| {key} | " + " | ".join(f"{split[s][key]:,.1f}" for s in sizes) + " |")
    for row_key in (("tcp", "threads"), ("inproc", "threads"), ("tcp", "processes")):
        sel = {r.size: r for r in rows if (r.transport, r.placement) == row_key}
        if not sel:
            continue
        cells = []
        for s in sizes:
            r = sel.get(s)
            if r is None:
                cells.append("–")
                continue
            bare_us = 1e6 / r.fps["bare"]
            cells.append(f"{bare_us:,.1f} / {bare_us * (r.ratio('tiltstream') - 1):+,.1f}")
        lines.append(f"| bare / extra, {' '.join(row_key)} | " + " | ".join(cells) + " |")
    lines += ["", "Goals: tiltstream ≤ 1.25× bare pyzmq time; ≥ 5,000 frames/s at 256².", ""]
    for row in rows:
        ratio = row.ratio("tiltstream")
        text = f"- {row.size}² {row.transport} {row.placement}: {ratio:.2f}× " + (
            "(met)" if ratio <= 1.25 else "(missed)"
        )
        if row.size == 256:
            fps = row.fps["tiltstream"]
            text += f", {fps:,.0f} frames/s " + ("(met)" if fps >= 5000 else "(missed)")
        lines.append(text)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--seconds", type=float, default=2.0, help="length of one timed window")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--placements", nargs="+", default=["threads", "processes"],
                   choices=["threads", "processes"])
    p.add_argument("--transports", nargs="+", default=["tcp", "inproc"], choices=["tcp", "inproc"])
    args = p.parse_args(argv)

    counter = [0]
    rows: list[Row] = []
    if "threads" in args.placements:
        with ThreadPoolExecutor(max_workers=2) as ex:
            q: queue.Queue = queue.Queue()
            for size in args.sizes:
                for transport in args.transports:
                    rows.append(measure_group(
                        ex, q, size, transport, "threads", args.seconds, args.repeats, counter,
                    ))
    if "processes" in args.placements and "tcp" in args.transports:
        mp = get_context("spawn")
        with mp.Manager() as manager, ProcessPoolExecutor(max_workers=2, mp_context=mp) as ex:
            q = manager.Queue()
            for size in args.sizes:
                rows.append(measure_group(
                    ex, q, size, "tcp", "processes", args.seconds, args.repeats, counter,
                ))
    log("cost split ...")
    split = {size: cost_split(size) for size in args.sizes}
    print(report(rows, split, args))


if __name__ == "__main__":
    main()
