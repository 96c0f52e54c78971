"""Monitor display cost: one refresh of the three slices for 256³ and 512³ volumes, and history memory.

    QT_QPA_PLATFORM=offscreen python benchmarks/bench_viz.py [--repeats 30] [--sizes 256,512]

A refresh is what the display timer does when the data or the crosshair changed: cut the three
slices from the volume (:meth:`ViewModel.view`), percentile auto-levels, ``setImage`` on the three
pyqtgraph ImageItems, and painting the panel (forced here with ``QWidget.grab``, which renders the
whole scene like a screen update). The crosshair moves every time, so nothing is cached. The
"live slices" row is the follow-live case: the service's own slices, no cut. Goal (issue 5):
≤ 30 ms per refresh on the 2-core CPU. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def make_volume(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, n, n) float32: a few soft blobs and noise (cheap to build at 512³)."""
    vol = rng.normal(0.0, 0.05, size=(n, n, n)).astype(np.float32)
    ax = np.linspace(-1, 1, n, dtype=np.float32)
    for cz, cy, cx, r in ((0.1, -0.2, 0.3, 0.25), (-0.3, 0.3, -0.2, 0.18), (0.0, 0.0, 0.0, 0.12)):
        g = [np.exp(-((ax - c) ** 2) / (2 * r * r)) for c in (cz, cy, cx)]
        vol += g[0][:, None, None] * g[1][None, :, None] * g[2][None, None, :]
    return vol


def ms(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return 1e3 * statistics.median(s), 1e3 * s[min(len(s) - 1, int(0.95 * len(s)))]


def bench_size(n: int, repeats: int, rng: np.random.Generator, app, window) -> list[tuple[str, float, float]]:
    from tiltstream.stream.messages import SlicesMsg, VolumeMsg
    from tiltstream.viz import ViewModel

    model = window.model
    vol = make_volume(n, rng)
    model.ingest(VolumeMsg(stream_id=f"bench{n}", seq=1, t_s=1.0, data=vol, source="sirt", n_frames_used=1))
    window.ortho.set_geometry(model.reference_shape, None)
    window.refresh(force=True)
    app.processEvents()
    rows = []
    for slab in (1, 5):
        model.set_slab(slab)
        cut, total = [], []
        for k in range(repeats):
            c = n // 4 + (k * 7) % (n // 2)
            model.set_crosshair(z=c, y=n - 1 - c, x=c)
            t0 = time.perf_counter()
            view = model.view()
            levels = model.auto_levels(view)
            t1 = time.perf_counter()
            window.ortho.set_view(view, levels)
            window.ortho.grab()  # paint the three images, as a screen update would
            t2 = time.perf_counter()
            cut.append(t1 - t0)
            total.append(t2 - t0)
        rows.append((f"{n}³ volume, slab {slab}: cut + levels", *ms(cut)))
        rows.append((f"{n}³ volume, slab {slab}: full refresh", *ms(total)))
    model.set_slab(1)
    # Follow-live: the service's full-resolution slices, drawn as they are.
    live = ViewModel()
    c = n // 2
    total = []
    for k in range(repeats):
        live.ingest(SlicesMsg(stream_id="live", seq=k + 1, t_s=float(k), xy=vol[c], xz=vol[:, c, :],
                              yz=np.ascontiguousarray(vol[:, :, c]), index=(c, c, c), source="sirt"))
        t0 = time.perf_counter()
        view = live.view()
        levels = live.auto_levels(view)
        window.ortho.set_view(view, levels)
        window.ortho.grab()
        total.append(time.perf_counter() - t0)
    rows.append((f"{n}² live slices: full refresh", *ms(total)))
    model.history.clear()
    del vol
    return rows


def history_memory(rng: np.random.Generator) -> list[tuple[str, int, float]]:
    from tiltstream.stream.messages import VolumeMsg
    from tiltstream.viz import ModelConfig, ViewModel

    rows = []
    for edge in (64, 128, 256):
        model = ViewModel(ModelConfig())  # defaults: 64 volumes, 1 GiB
        data = rng.random((edge, edge, edge), dtype=np.float32)
        for seq in range(1, 101):
            model.ingest(VolumeMsg(stream_id="mem", seq=seq, t_s=float(seq), data=data, source="sirt",
                                   n_frames_used=seq))
        rows.append((f"{edge}³ float32 volumes (100 published)", model.n_history, model.history.nbytes / 2**20))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--sizes", default="256,512")
    args = p.parse_args()
    from pyqtgraph.Qt import QtWidgets

    from tiltstream.viz import ViewModel
    from tiltstream.viz.window import MonitorWindow, apply_dark_theme

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    apply_dark_theme(app)
    window = MonitorWindow(ViewModel(), display_hz=1)  # the benchmark drives refreshes itself
    window.timer.stop()
    window.resize(1600, 1000)
    window.show()
    app.processEvents()
    rng = np.random.default_rng(0)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows += bench_size(n, args.repeats, rng, app, window)
    print(f"\nMonitor refresh, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"window 1600×1000 offscreen, {args.repeats} refreshes each (crosshair moving)\n")
    print("| refresh | median (ms) | p95 (ms) | goal ≤ 30 ms |")
    print("|---|---|---|---|")
    for name, med, p95 in rows:
        print(f"| {name} | {med:.1f} | {p95:.1f} | {'yes' if med <= 30 else 'no'} |")
    print("\n| history (defaults: 64 volumes, 1 GiB) | volumes kept | memory (MiB) |")
    print("|---|---|---|")
    for name, n, mib in history_memory(rng):
        print(f"| {name} | {n} | {mib:.0f} |")
    window.close()
    window.deleteLater()


if __name__ == "__main__":
    main()
