"""Live streaming SIRT on dask slab actors (``tiltstream recon --scheduler``).

Detector row ``y`` of every frame sees only volume slice ``y``, and the streaming SIRT's subset
choice depends only on the frames' order and times, so a :class:`~.streaming.StreamingSirt` over
rows ``[y0, y1)`` of every frame holds exactly rows ``y0:y1`` of the one-process estimate. Each
:class:`SlabActor` (a dask Actor, one per worker thread) is such a StreamingSirt. The coordinator,
:class:`SlabbedSirt`, has the interface the engine uses: it validates each frame, sends each actor
its rows, runs the same number of ordered-subset steps on every actor (lock step), and combines
their partial sums (Σr², Σy², pixels) into the residual and the prediction scores exactly; the
frame's noise level is computed once, here, on the whole frame. Frames wait here until the next
update, so adding frames and updating is one round trip; slices and volumes are gathered only when
asked for.

The coordinator keeps the window's raw frames (bounded like the actors' windows). An actor whose
worker is lost is reported in one line and rebuilt on a surviving worker from those frames (a few
sweeps over the window, as a resumed series is), and the series goes on; :attr:`SlabbedSirt.slab_rebuilds`
counts the rebuilds.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from tiltstream.recon.dask_batch import SchedulerError, dask_client, require_distributed
from tiltstream.recon.slabs import Slab, plan_slabs, slab_rows_for
from tiltstream.recon.streaming import Prediction, StreamingParams, StreamingSirt, WindowedEstimate, noise_sigma
from tiltstream.stream.validation import check_frame

__all__ = ["SlabActor", "SlabPool", "SlabbedSirt"]

log = logging.getLogger(__name__)

# (rows of the frame (rows, U) float32, angle_deg, t_s, seq): what an actor gets per frame
_Rows = tuple[np.ndarray, float, float, int]


class SlabActor(StreamingSirt):
    """On a worker: the :class:`StreamingSirt` of rows ``[y0, y1)`` of every frame (vol_shape (Z, rows, X))."""

    def step(self, frames: list[_Rows], steps: int) -> tuple[tuple[float, float], tuple[float, float, int] | None]:
        """Add ``frames`` (oldest first), run ``steps`` ordered-subset steps; returns the partial sums
        (Σr², Σy²) of the last step and (Σr², Σy², pixels) of the newest frame's prediction."""
        for rows, angle_deg, t_s, seq in frames:
            self.add_frame(rows, angle_deg, t_s, seq=seq)
        if steps:
            self.update(steps=steps)
        return self.last_residual_sums, self.last_prediction_sums

    def slab_slices(self, iz: int, iy: int | None, ix: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """This slab's part of the slices: xy (rows, X), xz (Z, X) when row ``iy`` (slab-local) is here, yz (Z, rows)."""
        xy, xz, yz = self.slices((iz, 0 if iy is None else iy, ix))
        return xy, None if iy is None else xz, yz


@dataclass
class _Frame:
    seq: int
    angle_deg: float
    t_s: float
    data: np.ndarray  # (Y, U) float32
    sigma: float  # noise_sigma of the whole frame (nan when no prediction is made)


class SlabbedSirt(WindowedEstimate):
    """The live estimate on slab actors, with :class:`StreamingSirt`'s interface (as the engine uses it).

    Parameters
    ----------
    client : a connected :class:`distributed.Client`.
    vol_shape, params, det_cols, axis_offset_px, device : as for :class:`StreamingSirt` (``device``
        is resolved on each worker).
    slab_rows : rows per actor; None: one slab per worker thread.
    call_timeout_s : an actor that does not answer within this many seconds counts as lost.
    """

    def __init__(self, client: Any, vol_shape: tuple[int, int, int], params: StreamingParams | None = None, *,
                 det_cols: int | None = None, axis_offset_px: float = 0.0, device: str = "auto",
                 slab_rows: int | None = None, call_timeout_s: float = 120.0):
        self.client = client
        self._set_geometry(vol_shape, params, det_cols, axis_offset_px)
        ny = self.vol_shape[1]
        self.device = str(device)
        self.call_timeout_s = float(call_timeout_s)
        workers = self._workers()
        self.slabs: list[Slab] = plan_slabs(ny, slab_rows or slab_rows_for(ny, len(workers), per_worker=1))
        self._futures: list[Any] = [self._submit(s, workers[i % len(workers)]) for i, s in enumerate(self.slabs)]
        self._actors: list[Any] = [f.result(timeout=self.call_timeout_s) for f in self._futures]
        self._window: deque[_Frame] = deque()
        self._pending: list[_Frame] = []
        self.n_frames_seen = 0
        self.slab_rebuilds = 0
        self.last_residual = float("nan")
        self._prediction_sums: tuple[float, float, int] | None = None
        self._last_sigma = float("nan")
        log.info("live SIRT on %d slab actor(s) of ≤ %d rows", len(self.slabs), self.slabs[0].rows)

    @staticmethod
    def memory_needed(vol_shape: tuple[int, int, int], det_cols: int, params: StreamingParams) -> int:
        """Host bytes the coordinator holds at most: the window's raw frames and one gathered volume
        (each actor holds :meth:`StreamingSirt.memory_needed` of its slab on its worker)."""
        nz, ny, nx = (int(s) for s in vol_shape)
        return 4 * params.window_frames * ny * int(det_cols) + 4 * nz * ny * nx

    # -- actors -------------------------------------------------------------------------------
    def _workers(self, exclude: tuple[str, ...] = ()) -> list[str]:
        workers = [w for w in sorted(self.client.scheduler_info()["workers"]) if w not in exclude]
        if not workers:
            raise SchedulerError("no dask worker left for the live slab actors")
        return workers

    def _submit(self, slab: Slab, worker: str) -> Any:
        nz, _, nx = self.vol_shape
        return self.client.submit(SlabActor, (nz, slab.rows, nx), self.params, det_cols=self.frame_shape[1],
                                  axis_offset_px=self.axis_offset_px, device=self.device, actor=True, workers=[worker],
                                  allow_other_workers=False, pure=False)

    def _call(self, method: str, args: list[tuple]) -> list[Any]:
        """``method(*args[i])`` on every actor at once; an actor whose worker is lost is rebuilt and asked again."""
        calls: list[Any] = []
        for i, (actor, arg) in enumerate(zip(self._actors, args)):
            try:
                calls.append(getattr(actor, method)(*arg))
            except RuntimeError as exc:  # dask knows already: "Worker holding Actor was lost"
                if not self._lost(i):
                    raise
                calls.append(exc)
        out = []
        for i, call in enumerate(calls):
            try:
                if isinstance(call, BaseException):
                    raise call
                out.append(call.result(timeout=self.call_timeout_s))
            except (OSError, RuntimeError) as exc:  # OSError: the worker died (connection refused/closed) or hangs
                if not (isinstance(exc, OSError) or self._lost(i)):
                    raise
                self._rebuild(i, exc)
                out.append(getattr(self._actors[i], method)(*args[i]).result(timeout=self.call_timeout_s))
        return out

    def _lost(self, i: int) -> bool:
        """Whether dask reports actor ``i``'s worker lost (its future is no longer finished)."""
        return self._futures[i].status not in ("finished", "pending")

    def _rebuild(self, i: int, exc: BaseException) -> None:
        """A new actor for slab ``i`` on a surviving worker, refilled with the window's frames that the
        lost one had (all but those still pending) and refined for four sweeps."""
        slab, lost = self.slabs[i], self._futures[i]
        dead = str(getattr(self._actors[i], "_address", "?"))
        with contextlib.suppress(Exception):
            lost.release()  # else the scheduler re-creates the lost actor, empty, elsewhere
        mine = Counter(str(getattr(a, "_address", "")) for a in self._actors)
        worker = min(self._workers(exclude=(dead,)), key=lambda w: mine.get(w, 0))
        pending = {id(f) for f in self._pending}
        held = [f for f in self._window if id(f) not in pending]
        log.error("slab %d (rows %d:%d): worker %s lost (%s: %s); rebuilding it on %s from %d frame(s) of the window",
                  slab.index, slab.y0, slab.y1, dead, type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "",
                  worker, len(held))
        self._futures[i] = self._submit(slab, worker)
        self._actors[i] = self._futures[i].result(timeout=self.call_timeout_s)
        sweeps = 4 * self.params.sweep_steps(len(held))
        self._actors[i].step(self._rows(held, slab), sweeps).result(timeout=self.call_timeout_s)
        self.slab_rebuilds += 1

    @staticmethod
    def _rows(frames: list[_Frame], slab: Slab) -> list[_Rows]:
        return [(np.ascontiguousarray(f.data[slab.span]), f.angle_deg, f.t_s, f.seq) for f in frames]

    # -- intake and update --------------------------------------------------------------------
    def add_frame(self, frame: np.ndarray, angle_deg: float, t_s: float, *, seq: int | None = None) -> None:
        """Validate one frame (Y, U) and queue it for the actors (sent with the next update or read).
        Raises :class:`~.streaming.FrameRejected` and changes nothing on bad input."""
        arr, angle_deg, t_s, _ = check_frame(frame, angle_deg=angle_deg, t_s=t_s, expected_shape=self.frame_shape)
        arr = np.array(arr, dtype=np.float32)  # a copy: the window outlives the received buffer
        predicts = len(self._window) >= self.params.subset_size  # as StreamingSirt.add_frame decides
        f = _Frame(self.n_frames_seen if seq is None else int(seq), float(angle_deg), float(t_s), arr,
                   noise_sigma(arr) if predicts else float("nan"))
        self._window.append(f)
        self._pending.append(f)
        self.n_frames_seen += 1
        self._trim_window()

    def _flush(self, steps: int) -> None:
        frames, self._pending = self._pending, []
        if not frames and not steps:
            return
        results = self._call("step", [(self._rows(frames, s), steps) for s in self.slabs])
        if frames:
            self._last_sigma = frames[-1].sigma
            parts = [p for _, p in results]
            self._prediction_sums = None if any(p is None for p in parts) else tuple(map(sum, zip(*parts)))
        if steps:
            res2, norm2 = sum(r[0] for r, _ in results), sum(r[1] for r, _ in results)
            self.last_residual = math.sqrt(res2 / norm2) if norm2 > 0 else float("nan")

    def update(self, steps: int | None = None) -> float:
        """Send the queued frames and run ``steps`` (default ``steps_per_update``) ordered-subset steps
        on every actor; returns the relative residual of the last subset (over all rows)."""
        if not self._window:
            return float("nan")
        self._flush(self.params.steps_per_update if steps is None else int(steps))
        return self.last_residual

    @property
    def last_prediction(self) -> Prediction | None:
        """The newest frame against the estimate before it was folded in (as :class:`StreamingSirt`'s)."""
        self._flush(0)
        if self._prediction_sums is None:
            return None
        return Prediction.of_sums(*self._prediction_sums, self._last_sigma)

    # -- gathering ----------------------------------------------------------------------------
    def volume(self) -> np.ndarray:
        """The whole estimate (Z, Y, X) float32, gathered from the actors."""
        self._flush(0)
        return np.concatenate(self._call("volume", [()] * len(self.slabs)), axis=1)

    def slices(self, index: tuple[int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """xy (Y, X), xz (Z, X), yz (Z, Y) through voxel ``index`` = (z, y, x), gathered slice by slice."""
        self._flush(0)
        iz, iy, ix = (int(i) for i in index)
        parts = self._call("slab_slices", [(iz, iy - s.y0 if s.y0 <= iy < s.y1 else None, ix) for s in self.slabs])
        xz = next(p[1] for p in parts if p[1] is not None)
        return (np.concatenate([p[0] for p in parts], axis=0), xz, np.concatenate([p[2] for p in parts], axis=1))

    def project(self, angle_deg: float) -> np.ndarray:
        """The estimate projected at ``angle_deg``: a (Y, U) frame, row slabs from the actors."""
        self._flush(0)
        return np.concatenate(self._call("project", [(float(angle_deg),)] * len(self.slabs)), axis=0)

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything (a new series)."""
        self._window.clear()
        self._pending.clear()
        self._call("reset", [()] * len(self.slabs))
        self.n_frames_seen = 0
        self.last_residual = float("nan")
        self._prediction_sums = None

    def close(self) -> None:
        """Let the actors go (their workers free the slabs)."""
        for f in self._futures:
            with contextlib.suppress(Exception):
                f.release()
        self._futures, self._actors = [], []


class SlabPool:
    """A dask cluster (``ADDRESS`` or ``local:N``, see :func:`~.dask_batch.dask_client`) kept for the
    life of a live service; :meth:`estimator` makes one :class:`SlabbedSirt` per series."""

    estimator_type = SlabbedSirt

    def __init__(self, spec: str, *, timeout_s: float = 5.0):
        require_distributed()
        self._stack = contextlib.ExitStack()
        self.client = self._stack.enter_context(dask_client(spec, timeout_s=timeout_s))
        self._current: SlabbedSirt | None = None

    def estimator(self, vol_shape: tuple[int, int, int], params: StreamingParams, **kw: Any) -> SlabbedSirt:
        """A fresh slabbed estimate (the previous series' actors are let go)."""
        if self._current is not None:
            self._current.close()
        self._current = SlabbedSirt(self.client, vol_shape, params, **kw)
        return self._current

    def close(self) -> None:
        if self._current is not None:
            self._current.close()
            self._current = None
        self._stack.close()
