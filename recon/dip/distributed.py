"""One DIP fit on several processes with torch DistributedDataParallel (gloo on CPU, nccl on GPU).

Every process holds the series and draws the same global batch of B frames from its own copy of the
seeded :class:`~tiltstream.recon.dip.data.BatchSampler`; process r fits its contiguous share of the
batch, with its loss weighted by (its frames · world size / B). DDP averages the gradients, so every
step is the step one process takes on the whole batch (same losses to float rounding), and the
parameters stay identical on all processes. Held-out scoring runs unchanged on every process; only
rank 0 writes checkpoints (and results).

Two ways in: :func:`reconstruct_dip_ddp` spawns N processes on this machine
(``tiltstream reconstruct --method dip --nproc N``); under ``torchrun`` each process already has
``RANK``/``WORLD_SIZE`` and calls :func:`fit_in_group` inside :func:`process_group`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tiltstream.recon.dip.data import SeriesData
from tiltstream.recon.dip.fit import DipTrainer
from tiltstream.recon.dip.model import DipGeometry
from tiltstream.recon.dip.params import DipParams
from tiltstream.recon.projector import resolve_device

__all__ = ["DistributedDipTrainer", "fit_in_group", "process_group", "reconstruct_dip_ddp", "torchrun_world"]


def torchrun_world() -> tuple[int, int] | None:
    """(rank, world size) when started by torchrun (``RANK`` and ``WORLD_SIZE`` set), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])


def _device_for_rank(device: str | torch.device) -> torch.device:
    """``device`` with a CUDA index per process (``LOCAL_RANK``, else rank modulo the GPUs)."""
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank() % max(torch.cuda.device_count(), 1)))
        dev = torch.device("cuda", local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    return dev


@contextlib.contextmanager
def process_group(device: str | torch.device, *, rank: int | None = None, world_size: int | None = None,
                  init_method: str = "env://", timeout_s: float = 300.0) -> Iterator[torch.device]:
    """Join (and finally leave) the process group; yields this process's device. Backend: nccl for
    CUDA, gloo otherwise. Without ``rank``/``world_size`` they come from the environment (torchrun)."""
    cuda = resolve_device(device).type == "cuda"
    kwargs: dict[str, Any] = {} if rank is None else {"rank": rank, "world_size": world_size}
    dist.init_process_group("nccl" if cuda else "gloo", init_method=init_method,
                            timeout=timedelta(seconds=timeout_s), **kwargs)
    try:
        yield _device_for_rank(device)
    finally:
        dist.destroy_process_group()


class DistributedDipTrainer(DipTrainer):
    """A :class:`DipTrainer` that is one rank of a data-parallel fit (the process group must be up).

    Same constructor and :meth:`from_checkpoint` as the one-process trainer; ``fit`` then takes the
    same steps on every rank. ``batch_frames`` must be at least the world size.
    """

    def __init__(self, frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray, params: DipParams, *,
                 device: str | torch.device | None = None, geometry: DipGeometry | None = None):
        if not dist.is_initialized():
            raise RuntimeError("DistributedDipTrainer: no torch.distributed process group (use process_group())")
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        super().__init__(frames, angles_deg, times_s, params, device=device, geometry=geometry)

    def _setup(self, data: SeriesData, params: DipParams, geometry: DipGeometry | None) -> None:
        super()._setup(data, params, geometry)
        if self.sampler.batch_frames < self.world_size:
            raise ValueError(f"batch_frames: expected at least one frame per process ({self.world_size}), "
                             f"got {self.sampler.batch_frames}")
        ids = [self.device.index] if self.device.type == "cuda" else None
        self._ddp = DistributedDataParallel(self.model, device_ids=ids)
        self._forward = torch.compile(self._ddp) if params.compile and self.device.type == "cuda" else self._ddp

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        frame_idx, rows = self.sampler.next()
        mine = torch.tensor_split(torch.arange(frame_idx.numel()), self.world_size)[self.rank]
        # DDP averages gradients over ranks: this weight makes the average the whole batch's gradient
        weight = self.world_size * mine.numel() / frame_idx.numel()
        return frame_idx[mine], rows[mine], weight

    def _batch_loss(self, local: torch.Tensor, weight: float) -> float:
        total = (local.float() * (weight / self.world_size)).reshape(1)
        dist.all_reduce(total)
        return float(total)

    def _after_backward(self) -> None:
        if self.shifts is not None and self.shifts.grad is not None:  # not a module parameter: not DDP's
            dist.all_reduce(self.shifts.grad)
            self.shifts.grad.div_(self.world_size)

    def save(self, path: str | os.PathLike) -> None:
        if self.rank == 0:
            super().save(path)


def fit_in_group(frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray, query_times_s: Sequence[float],
                 params: DipParams, *, device: torch.device, checkpoint: str | os.PathLike | None = None,
                 resume: str | os.PathLike | None = None,
                 progress: Callable[..., Any] | None = None) -> tuple[np.ndarray | None, dict[str, Any], str]:
    """This rank's part of a data-parallel fit: ``(volumes or None, info, stopped)``.

    Rank 0 gets the volumes (T, Z, Y, X) of the best model at ``query_times_s`` and reports
    ``progress`` (as :meth:`DipTrainer.fit`); the other ranks get None and report nothing.
    """
    if resume is not None:
        trainer = DistributedDipTrainer.from_checkpoint(resume, frames, angles_deg, times_s, params, device=device)
    else:
        trainer = DistributedDipTrainer(frames, angles_deg, times_s, params, device=device)
    rank0 = trainer.rank == 0
    stopped = trainer.fit(progress=progress if rank0 else None, checkpoint=checkpoint)
    if rank0 and callable(getattr(progress, "close", None)):
        progress.close()  # a progress bar made in this process
    volumes = trainer.best_model().volumes(query_times_s) if rank0 else None
    info = trainer.info() | {"world_size": trainer.world_size}
    return volumes, info, stopped


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawned_rank(rank: int, nproc: int, port: int, out: str, args: tuple, kwargs: dict) -> None:
    """Entry of a process started by :func:`reconstruct_dip_ddp`."""
    device = kwargs.pop("device")
    if resolve_device(device).type == "cpu":  # N processes share the cores instead of each taking all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // nproc))
    with process_group(device, rank=rank, world_size=nproc, init_method=f"tcp://127.0.0.1:{port}") as dev:
        volumes, info, stopped = fit_in_group(*args, device=dev, **kwargs)
    if rank == 0:
        torch.save({"volumes": volumes, "info": info, "stopped": stopped}, out)


def reconstruct_dip_ddp(
    nproc: int,
    frames: np.ndarray,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    query_times_s: Sequence[float],
    params: DipParams,
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    progress: Callable[..., Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any], str]:
    """Fit the DIP on ``nproc`` processes of this machine (``torch.multiprocessing.spawn``) and
    return rank 0's ``(volumes (T, Z, Y, X), info, stopped)``, as :func:`fit_in_group`.

    ``progress`` runs in rank 0's process, so it must be picklable. A failed rank raises
    RuntimeError with its error's last line.
    """
    if nproc < 1:
        raise ValueError(f"nproc: expected ≥ 1 processes, got {nproc}")
    args = (np.asarray(frames, dtype=np.float32), np.asarray(angles_deg), np.asarray(times_s),
            np.asarray(query_times_s, dtype=np.float64), params)
    kwargs = {"device": params.device, "checkpoint": checkpoint, "resume": resume, "progress": progress}
    with tempfile.TemporaryDirectory(prefix="tiltstream-ddp-") as tmp:
        out = str(Path(tmp) / "rank0.pt")
        try:
            torch.multiprocessing.spawn(_spawned_rank, args=(nproc, _free_port(), out, args, kwargs), nprocs=nproc)
        except torch.multiprocessing.ProcessRaisedException as exc:
            last = [line for line in str(exc).strip().splitlines() if line.strip()][-1]
            raise RuntimeError(f"DIP on {nproc} processes failed: {last}") from None
        except torch.multiprocessing.ProcessExitedException as exc:
            raise RuntimeError(f"DIP on {nproc} processes failed: {exc}") from None
        res = torch.load(out, weights_only=False)
    return res["volumes"], res["info"], res["stopped"]
