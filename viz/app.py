"""Running the monitor: on screen, headless (PNG snapshot / movie), or as a child process.

``tiltstream view --connect RECON_EP [--frames FRAMES_EP] [--show dip] [--snapshot out.png --after S]``
(its options are in ``tiltstream.cmd_view``) ends up in :func:`launch_monitor`. This module imports
Qt only inside the functions that need it, so the command line can be built without Qt.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from tiltstream.viz.model import ViewModel
from tiltstream.viz.receiver import StreamReceiver
from tiltstream.viz.records import SOURCES, ModelConfig

__all__ = ["display_available", "launch_monitor", "render_snapshot"]

log = logging.getLogger(__name__)


_SAME: Any = object()


def display_available() -> bool:
    """True when a window can be shown here (a display server, or not Linux); False when headless."""
    if os.environ.get("QT_QPA_PLATFORM", "").split(":")[0] in ("offscreen", "minimal"):
        return False
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def _qt_app(headless: bool) -> Any:
    if headless and not display_available():
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    try:
        from pyqtgraph.Qt import QtWidgets  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise RuntimeError(f"the monitor needs pyqtgraph and a Qt binding (pip install pyqtgraph PySide6): {exc}") \
            from exc
    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    from tiltstream.viz.window import apply_dark_theme  # noqa: PLC0415

    apply_dark_theme(app)
    return app


def _command(recon_endpoint: str | None, frames_endpoint: str | None, opts: dict[str, Any]) -> list[str]:
    cmd = [sys.executable, "-m", "tiltstream", "view"]
    if recon_endpoint:
        cmd += ["--connect", recon_endpoint]
    if frames_endpoint:
        cmd += ["--frames", frames_endpoint]
    flags = {"snapshot": "--snapshot", "after_s": "--after", "movie": "--movie", "display_hz": "--display-hz",
             "history_volumes": "--history", "out_dir": "--out-dir", "show": "--show"}
    for key, flag in flags.items():
        if opts.get(key) is not None:
            cmd += [flag, str(opts[key])]
    if opts.get("size") is not None:
        cmd += ["--size", "{}x{}".format(*opts["size"])]
    curve, frames_curve = opts.get("curve"), opts.get("frames_curve")
    if curve is not None:
        cmd += ["--curve-key", str(curve.client_secret_key_file), "--curve-server-key",
                str(curve.server_public_key_file)]
        if frames_curve is not None and frames_curve != curve:
            cmd += ["--curve-frames-server-key", str(frames_curve.server_public_key_file)]
    return cmd


def launch_monitor(
    recon_endpoint: str | None,
    frames_endpoint: str | None = None,
    *,
    snapshot: str | Path | None = None,
    after_s: float = 5.0,
    movie: str | Path | None = None,
    display_hz: float = 20.0,
    history_volumes: int = 64,
    out_dir: str | Path = ".",
    size: tuple[int, int] = (1600, 1000),
    curve: Any = None,
    frames_curve: Any = _SAME,
    detach: bool = False,
    show: str = "sirt",
) -> Any:
    """Show the monitor for a reconstruction service (and optionally the raw frame stream).

    Parameters
    ----------
    recon_endpoint : the service's PUB endpoint (``tiltstream recon --pub``; printed by ``tiltstream demo``).
    frames_endpoint : the microscope's/simulator's frame PUB endpoint (``tiltstream sim --pub``), or None.
    snapshot : headless mode: receive for ``after_s`` seconds, write this PNG and return (renders
        offscreen when there is no display).
    movie : with ``snapshot`` (or alone, also headless): also export the slice history (.gif/.mp4).
    display_hz : panel refresh rate.
    history_volumes : volumes kept for the time slider.
    out_dir : where the Snapshot and Export buttons write.
    size : window size in pixels (width, height).
    curve : :class:`~tiltstream.stream.sockets.CurveClientConfig` for an encrypted service, or None.
    frames_curve : the same for the frames publisher when its server key differs (default: ``curve``).
    show : reconstruction to show first: ``"sirt"`` (the streaming SIRT) or ``"dip"`` (the online
        DIP's estimate once one arrives; the SIRT until then). The window's selector changes it.
    detach : start the monitor in a child process (``python -m tiltstream view``) and return its
        :class:`subprocess.Popen` at once — for callers whose main thread is busy (the demo).

    Returns
    -------
    The model's final :class:`~tiltstream.viz.model.Status` (blocking use), or the ``Popen`` (``detach``).
    The blocking call must run on the main thread (Qt's rule) and returns when the window is closed,
    on Ctrl-C, or after the headless snapshot.
    """
    if frames_curve is _SAME:
        frames_curve = curve
    if detach:
        if frames_curve is not None and curve is None:
            raise ValueError("detach: frames_curve without curve cannot be passed to a child monitor")
        opts = {"curve": curve, "frames_curve": frames_curve, "snapshot": snapshot,
                "after_s": after_s if (snapshot or movie) else None, "movie": movie, "display_hz": display_hz,
                "history_volumes": history_volumes, "out_dir": out_dir, "size": size, "show": show}
        cmd = _command(recon_endpoint, frames_endpoint, opts)
        log.info("starting monitor: %s", " ".join(cmd))
        return subprocess.Popen(cmd)

    if show not in SOURCES:
        raise ValueError(f"show: expected one of {', '.join(SOURCES)}, got {show!r}")
    headless = snapshot is not None or movie is not None
    app = _qt_app(headless)
    from pyqtgraph.Qt import QtCore  # noqa: PLC0415

    from tiltstream.viz.window import MonitorWindow  # noqa: PLC0415

    model = ViewModel(ModelConfig(history_volumes=int(history_volumes)), recon_endpoint=recon_endpoint,
                      frames_endpoint=frames_endpoint)
    model.set_source(show)
    window = MonitorWindow(model, display_hz=display_hz, out_dir=out_dir)
    window.resize(*size)
    receiver = StreamReceiver(model, recon_endpoint, frames_endpoint, curve=curve, frames_curve=frames_curve)
    receiver.start()
    errors: list[BaseException] = []

    def finish() -> None:
        try:
            receiver.maybe_raise()
            if snapshot is not None:
                window.save_snapshot(snapshot)
            if movie is not None:
                window.export_history(movie, fmt=Path(movie).suffix.lstrip(".").lower() or "gif")
        except BaseException as exc:  # noqa: BLE001 - re-raised after the event loop
            errors.append(exc)
        app.quit()

    # Python handles Ctrl-C only between Qt events: wake it up regularly.
    on_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: app.quit()) if on_main else None
    ticker = QtCore.QTimer()
    ticker.timeout.connect(lambda: None)
    ticker.start(200)
    watchdog = QtCore.QTimer()
    watchdog.timeout.connect(lambda: _check(receiver, errors, app))
    watchdog.start(500)
    try:
        window.show()
        if headless:
            QtCore.QTimer.singleShot(int(max(0.0, after_s) * 1000), finish)
        app.exec()
    finally:
        ticker.stop()
        watchdog.stop()
        window.timer.stop()
        receiver.stop()
        window.close()
        window.deleteLater()  # delete Qt objects now, not during interpreter shutdown
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    if errors:
        raise errors[0]
    return model.status()


def render_snapshot(model: ViewModel, path: str | Path, *, size: tuple[int, int] = (1600, 1000)) -> Path:
    """Render a :class:`~tiltstream.viz.model.ViewModel` that was fed elsewhere (e.g. by a
    :class:`~tiltstream.viz.receiver.StreamReceiver` during a run) as the monitor window, to PNG.

    Offscreen when there is no display. Call it on the main thread (Qt's rule); returns ``path``.
    """
    app = _qt_app(headless=True)
    from pyqtgraph.Qt import QtCore  # noqa: PLC0415

    from tiltstream.viz.window import MonitorWindow  # noqa: PLC0415

    window = MonitorWindow(model, out_dir=Path(path).parent)
    window.resize(*size)
    try:
        window.show()
        for _ in range(3):  # draw, then let Qt lay out what changed (status line texts, splitters)
            window.refresh(force=True)
            app.processEvents()
        return window.save_snapshot(path)
    finally:
        window.timer.stop()
        window.close()
        window.deleteLater()
        QtCore.QCoreApplication.sendPostedEvents(None, QtCore.QEvent.Type.DeferredDelete)


def _check(receiver: StreamReceiver, errors: list[BaseException], app: Any) -> None:
    try:
        receiver.maybe_raise()
    except BaseException as exc:  # noqa: BLE001 - surfaced by launch_monitor
        errors.append(exc)
        app.quit()
