"""The monitor's network side: a background thread that subscribes and fills the view model.

:class:`StreamReceiver` owns one :class:`~tiltstream.stream.transport.Subscriber` on the
reconstruction service's PUB socket and, optionally, one on the microscope's frame PUB socket. Its
thread waits on both, takes *every* queued message of each socket
(:meth:`~tiltstream.stream.transport.Subscriber.recv_all`: every tilt angle reaches the coverage
plot, every volume of a DIP estimate — a burst of volumes at several times — reaches the DIP's time
slider) and hands them to :meth:`ViewModel.ingest <tiltstream.viz.model.ViewModel.ingest>`, which
only stores references (the model keeps the newest where only the newest matters). The GUI never touches a socket and the receiver never waits for the GUI: the socket
queues are tiny (``rcvhwm``), so when the receiver falls behind ZeroMQ drops messages for this
monitor only — the publisher never blocks — and the model counts them from the seq gaps.

An error in the thread is kept and re-raised by :meth:`StreamReceiver.maybe_raise` (and by
:meth:`~StreamReceiver.stop`), so background failures are not lost.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from tiltstream.viz.model import ViewModel

__all__ = ["StreamReceiver"]

log = logging.getLogger(__name__)
_SAME: Any = object()  # default of frames_curve: the same settings as curve

_MAX_BATCH = 16  # messages taken per socket and wake-up: bounds what is held outside the model


class StreamReceiver:
    """Subscribe to ``recon_endpoint`` (and ``frames_endpoint``) and feed ``model`` in a thread.

    Parameters
    ----------
    model : the view model to fill.
    recon_endpoint : the reconstruction service's PUB endpoint (slices, volumes, metrics).
    frames_endpoint : the microscope's or simulator's frame PUB endpoint, or None.
    rcvhwm : receive queue bound of the reconstruction socket, messages: room for one DIP estimate's
        burst (its volumes and metrics) arriving while the thread is busy; memory is at most this
        many published volumes.
    frames_rcvhwm : receive queue bound of the frame socket, messages. A little deeper, so a short
        pause of this process (garbage collection, a slow redraw holding the interpreter) does not
        cost tilt angles; memory is at most this many frames.
    poll_ms : how often the thread checks for :meth:`stop`, milliseconds.
    context, curve : ZeroMQ context and CURVE client settings (see :mod:`tiltstream.stream.sockets`).
    frames_curve : CURVE client settings of the frames socket when its server key differs (default: ``curve``).
    """

    def __init__(
        self,
        model: ViewModel,
        recon_endpoint: str | None,
        frames_endpoint: str | None = None,
        *,
        rcvhwm: int = 8,
        frames_rcvhwm: int = 8,
        poll_ms: int = 50,
        context: Any = None,
        curve: Any = None,
        frames_curve: Any = _SAME,
    ) -> None:
        if not recon_endpoint and not frames_endpoint:
            raise ValueError("expected a reconstruction endpoint and/or a frames endpoint, got neither")
        self.model = model
        self.recon_endpoint = recon_endpoint
        self.frames_endpoint = frames_endpoint
        self.rcvhwm = int(rcvhwm)
        self.frames_rcvhwm = int(frames_rcvhwm)
        self.poll_ms = int(poll_ms)
        self.context = context
        self.curve = curve
        self.frames_curve = curve if frames_curve is _SAME else frames_curve
        self.received = 0
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, timeout_s: float = 5.0) -> StreamReceiver:
        """Start the thread; wait until its sockets are connected (raises what connecting raised)."""
        if self._thread is not None:
            raise RuntimeError("receiver already started")
        self._thread = threading.Thread(target=self._run, name="tiltstream-monitor-rx", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"monitor receiver did not start within {timeout_s} s")
        self.maybe_raise()
        return self

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def maybe_raise(self) -> None:
        """Re-raise an error the thread died of, once."""
        err, self._error = self._error, None
        if err is not None:
            raise err

    def stop(self, timeout_s: float = 2.0) -> None:
        """Stop the thread, close its sockets and re-raise any error it had."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("monitor receiver thread did not stop within %.1f s", timeout_s)
        self.maybe_raise()

    def __enter__(self) -> StreamReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- thread -----------------------------------------------------------------------------------
    def _open(self) -> list[tuple[str, Any]]:
        from tiltstream.stream.transport import Subscriber  # noqa: PLC0415 (pyzmq only when used)

        # recv_all: every message that reached this socket goes to the model (which only keeps
        # references), so seq gaps in the model are real losses, not messages this code skipped.
        subs: list[tuple[str, Any]] = []
        try:
            if self.recon_endpoint:
                subs.append(("recon", Subscriber(self.recon_endpoint, rcvhwm=self.rcvhwm, context=self.context,
                                                 curve=self.curve, name=f"monitor {self.recon_endpoint}")))
            if self.frames_endpoint:
                subs.append(("frames", Subscriber(self.frames_endpoint, rcvhwm=self.frames_rcvhwm,
                                                  context=self.context, curve=self.frames_curve,
                                                  name=f"monitor {self.frames_endpoint}")))
        except BaseException:
            for _, sub in subs:
                sub.close(0)
            raise
        return subs

    def _run(self) -> None:
        import zmq  # noqa: PLC0415

        subs: list[tuple[str, Any]] = []
        try:
            subs = self._open()
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        poller = zmq.Poller()
        for _, sub in subs:
            poller.register(sub.socket, zmq.POLLIN)
        last_stats = 0.0
        try:
            while not self._stop.is_set():
                events = dict(poller.poll(self.poll_ms))
                for _, sub in subs:
                    if sub.socket not in events:
                        continue
                    # what is queued, bounded so that stop() and the other socket are seen
                    for msg in sub.recv_all(0, _MAX_BATCH):
                        self.model.ingest(msg, time.monotonic())
                        self.received += 1
                now = time.monotonic()
                if now - last_stats > 0.5:
                    last_stats = now
                    self.model.note_rejected(sum(sub.stats().rejected for _, sub in subs))
        except BaseException as exc:  # surfaced by maybe_raise()/stop()
            log.exception("monitor receiver failed")
            self._error = exc
        finally:
            for _, sub in subs:
                sub.close(0)
