"""Batch slab-parallel reconstruction on dask.distributed (the ``[distributed]`` extra).

The client splits the frames into Y-slabs (:mod:`tiltstream.recon.slabs`) and submits one task per
slab; each worker runs the one-process core, :func:`tiltstream.recon.batch.reconstruct_4d`, on its
rows and returns that slab of every volume (T, Z, rows, X). The client hands each slab to ``write``
as it arrives (:func:`distributed.as_completed`) and releases it, so no process ever holds the
whole 4-D result. A task is a plain function of its arguments, so dask reruns it elsewhere when a
worker dies. dask and distributed are imported only here, and only when used.

Start a cluster with ``dask scheduler`` and ``dask worker ADDRESS`` (tiltstream installed on every
worker), or use ``local:N`` for a :class:`distributed.LocalCluster` of N single-threaded processes.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

import torch

from tiltstream.recon.batch import BatchParams, reconstruct_4d
from tiltstream.recon.geometry import ProjectionGeometry, VolumeGeometry
from tiltstream.recon.projector import Projector, operator
from tiltstream.recon.slabs import Slab, plan_slabs, slab_frames, slab_rows_for

__all__ = ["INSTALL_HINT", "SchedulerError", "dask_client", "default_slab_rows", "parse_scheduler", "reconstruct_slabs",
           "require_distributed", "version_problems"]

log = logging.getLogger(__name__)

INSTALL_HINT = "--scheduler needs the [distributed] extra: pip install 'tiltstream[distributed]'"

# must be equal on client and workers: they pickle code and data for each other, and the task is ours
_MUST_MATCH = ("python", "dask", "distributed", "cloudpickle", "msgpack", "tiltstream")
# must be importable on every worker: a task runs the reconstruction core there
_MUST_HAVE = ("tiltstream", "torch", "numpy")


class SchedulerError(RuntimeError):
    """The dask cluster cannot run the reconstruction (unreachable, no workers, mismatched installs)."""


def require_distributed() -> Any:
    """The ``distributed`` module; else RuntimeError naming the extra to install."""
    try:
        import distributed  # noqa: PLC0415 (optional extra)
    except ImportError as exc:
        raise RuntimeError(f"{INSTALL_HINT} ({exc})") from exc
    return distributed


def parse_scheduler(spec: str) -> int | str:
    """``"local:N"`` → N (worker processes to start); anything else is a scheduler address."""
    text = spec.strip()
    if not text:
        raise ValueError("--scheduler: expected an address like tcp://host:8786 or local:N, got ''")
    if text.lower().startswith("local:"):
        try:
            n = int(text.split(":", 1)[1])
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"--scheduler: expected local:N with N ≥ 1 worker processes, got {spec!r}")
        return n
    return text


def _version(packages: dict[str, str | None], name: str) -> str | None:
    v = packages.get(name)
    if v is not None and name == "python":
        return ".".join(str(v).split(".")[:2])  # 3.11.7 and 3.11.9 unpickle each other's data
    return v


def version_problems(versions: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(errors, warnings) from :meth:`distributed.Client.get_versions` output (with
    ``packages=["tiltstream", "torch"]``): a worker missing torch, numpy or tiltstream and a
    client/scheduler/worker difference in :data:`_MUST_MATCH` are errors; other package
    differences (tornado, toolz, lz4, torch, numpy, ...) are warnings."""
    mine = versions["client"]["packages"]
    errors: list[str] = []
    notes: list[str] = []
    others = [("scheduler", versions["scheduler"]["packages"])]
    others += [(f"worker {addr}", info["packages"]) for addr, info in sorted(versions["workers"].items())]
    for who, packages in others:
        if who != "scheduler":
            missing = [name for name in _MUST_HAVE if packages.get(name) is None]
            if missing:
                errors.append(f"{who} has no {', '.join(missing)} (install tiltstream there)")
        for name in sorted(set(mine) | set(packages)):
            ours, theirs = _version(mine, name), _version(packages, name)
            if ours == theirs or theirs is None or (who == "scheduler" and name in _MUST_HAVE):
                continue
            text = f"{name} {theirs} on {who}, {ours} here"
            (errors if name in _MUST_MATCH else notes).append(text)
    return errors, notes


def _check_cluster(client: Any, address: str, *, timeout_s: float) -> None:
    """Raise :class:`SchedulerError` in one line unless workers are there and match this client."""
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except TimeoutError:
        raise SchedulerError(f"dask scheduler {address}: no workers connected within {timeout_s:g} s "
                             f"(start some with 'dask worker {address}')") from None
    errors, notes = version_problems(client.get_versions(packages=["tiltstream", "torch"]))
    if notes:
        log.warning("dask cluster %s: version differences: %s", address, "; ".join(notes))
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise SchedulerError(f"dask cluster {address} cannot run tiltstream: {'; '.join(errors[:3])}{more}")


@contextlib.contextmanager
def dask_client(spec: str, *, timeout_s: float = 5.0) -> Iterator[Any]:
    """A checked :class:`distributed.Client` for ``spec`` (an address, or ``local:N``), closed after.

    ``local:N`` starts a LocalCluster of N worker processes with one thread each, for this run.
    An address must answer within ``timeout_s`` seconds; every error is a one-line
    :class:`SchedulerError` (a RuntimeError).
    """
    distributed = require_distributed()
    target = parse_scheduler(spec)
    cluster = None
    with _quiet_dask(), warnings.catch_warnings():
        # mismatched versions are reported by _check_cluster in one line, not as dask's table
        warnings.simplefilter("ignore", distributed.versions.VersionMismatchWarning)
        if isinstance(target, int):
            # dashboard (and dask's HTTP endpoints) on a free port: never a clash with another cluster
            cluster = distributed.LocalCluster(n_workers=target, threads_per_worker=1, processes=True,
                                               dashboard_address=":0", silence_logs=logging.ERROR)
            client = distributed.Client(cluster)
            address = f"local:{target}"
        else:
            address = target
            try:
                client = distributed.Client(target, timeout=timeout_s)
            except (OSError, TimeoutError, ValueError) as exc:
                raise SchedulerError(f"dask scheduler {target} unreachable within {timeout_s:g} s "
                                     f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                                     "start one with 'dask scheduler'") from None
    try:
        _check_cluster(client, address, timeout_s=timeout_s)
        log.info("dask cluster %s: %d worker(s); dashboard %s", address, len(client.scheduler_info()["workers"]),
                 client.dashboard_link)
        yield client
    finally:
        with _quiet_dask():  # a closing LocalCluster logs every closed connection
            client.close()
            if cluster is not None:
                cluster.close()


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """dask's own INFO chatter off (errors still shown) unless this module logs at DEBUG."""
    dask_log = logging.getLogger("distributed")
    before = dask_log.level
    if not log.isEnabledFor(logging.DEBUG):
        dask_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        dask_log.setLevel(before)


class _WorkerOperators:
    """The projectors a worker process built for one run, shared by all its slabs of that run.

    A projector's matrix does not depend on the number of Y-slices (:meth:`Projector.for_rows`), and
    building it costs more than many SIRT iterations on a slab (benchmarks/RESULTS.md), so a worker
    builds each one once per run. Projectors are kept while their matrices fit in ``budget_bytes``
    (first come, first kept: windowed runs visit their windows in the same order on every slab).
    """

    budget_bytes = 2 << 30

    def __init__(self) -> None:
        self.run = ""
        self.kept: dict[tuple, Projector] = {}
        self.bytes = 0

    def factory(self, run: str) -> Callable[[VolumeGeometry, ProjectionGeometry, torch.device], Projector]:
        if run != self.run:
            self.run, self.kept, self.bytes = run, {}, 0

        def make(vol: VolumeGeometry, proj: ProjectionGeometry, device: torch.device) -> Projector:
            key = (proj.angles_deg.tobytes(), vol.nz, vol.nx, vol.voxel_nm, proj.det_shape[1], proj.axis_offset_px,
                   str(device))
            if key in self.kept:
                return self.kept[key].for_rows(vol.ny)
            A = operator(vol, proj, device=device)
            size = 16 * int(getattr(A, "nnz", 0))  # matrix and its transpose: values and indices
            if size and self.bytes + size <= self.budget_bytes:
                self.kept[key], self.bytes = A, self.bytes + size
            return A

        return make


_OPERATORS = _WorkerOperators()  # one per worker process


def _slab_task(frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray, query_times_s: np.ndarray,
               params: BatchParams, device: str, run: str) -> np.ndarray:
    """On a worker: the slab (T, Z, rows, X) of every volume, by the one-process core."""
    return reconstruct_4d(frames, angles_deg, times_s, query_times_s, params, device=device,
                          make_operator=_OPERATORS.factory(run))


def _worker_threads(client: Any) -> int:
    return max(1, sum(int(w.get("nthreads", 1)) for w in client.scheduler_info()["workers"].values()))


def default_slab_rows(client: Any, ny: int) -> int:
    """Rows per slab for ``ny`` detector rows on ``client``'s cluster: about four slabs per worker thread."""
    return slab_rows_for(ny, _worker_threads(client))


def reconstruct_slabs(
    client: Any,
    frames: np.ndarray,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    query_times_s: Sequence[float],
    params: BatchParams,
    *,
    write: Callable[[Slab, np.ndarray], None],
    device: str = "auto",
    slab_rows: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Slab]:
    """Reconstruct frames (N, Y, U) slab by slab on ``client``'s workers; returns the slabs done.

    ``write(slab, block)`` gets each slab's (T, Z, rows, X) float32 block of the volumes at
    ``query_times_s`` as soon as it arrives (in completion order). ``slab_rows`` defaults to about
    four slabs per worker thread. ``progress(rows)`` counts detector rows done. The blocks equal the
    rows ``slab.y0:slab.y1`` of :func:`reconstruct_4d` on all frames (every Y-slice is independent).
    """
    distributed = require_distributed()
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames: expected (N, Y, U), got shape {frames.shape}")
    angles = np.asarray(angles_deg, dtype=np.float64)
    times = np.asarray(times_s, dtype=np.float64)
    query = np.asarray(query_times_s, dtype=np.float64)
    if angles.shape != (frames.shape[0],) or times.shape != (frames.shape[0],):
        raise ValueError(f"expected one angle and one time per frame ({frames.shape[0]}), "
                         f"got {angles.size} and {times.size}")
    ny = frames.shape[1]
    slabs = plan_slabs(ny, slab_rows or default_slab_rows(client, ny))
    run = uuid.uuid4().hex[:8]
    futures = {client.submit(_slab_task, slab_frames(frames, slab), angles, times, query, params, device, run,
                             key=f"tiltstream-slab-{run}-{slab.index}", pure=False): slab for slab in slabs}
    log.info("submitted %d slab(s) of ≤ %d rows to %d worker thread(s)", len(slabs), slabs[0].rows,
             _worker_threads(client))
    done: list[Slab] = []
    try:
        for fut in distributed.as_completed(list(futures)):
            slab = futures.pop(fut)
            try:
                block = fut.result()
            except distributed.KilledWorker as exc:
                raise SchedulerError(f"slab {slab.index} (rows {slab.y0}:{slab.y1}) killed its workers "
                                     f"repeatedly: {exc}") from None
            fut.release()
            write(slab, block)
            done.append(slab)
            if progress is not None:
                progress(slab.rows)
    finally:
        if futures:
            client.cancel(list(futures))
    return done
