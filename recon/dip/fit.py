"""Fitting the space-time generator to a tilt series (offline), with held-out scoring, early stopping,
checkpoints that resume exactly, and the CLI's entry point :func:`reconstruct_dip`."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tiltstream.recon.dip.checkpoint import geometry_from_state, read_checkpoint, save_checkpoint
from tiltstream.recon.dip.data import BatchSampler, SeriesData
from tiltstream.recon.dip.losses import data_loss, learning_rate, ramp_filter, tv_3d
from tiltstream.recon.dip.model import DipGeometry, SpaceTimeGenerator, build_generator
from tiltstream.recon.dip.params import DipParams
from tiltstream.recon.dip.projection import frame_matrices, project_frames, shift_rows
from tiltstream.recon.projector import resolve_device

__all__ = ["DipState", "DipTrainer", "reconstruct_dip", "default_query_times"]

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 10


@dataclass
class DipState:
    """What a callback sees after each evaluation; a callback returning True stops the fit."""

    step: int
    loss: float
    heldout_nrmse: float | None
    best_step: int
    model: SpaceTimeGenerator


class DipTrainer:
    """A DIP fit in progress: data, generator, optimiser, sampler, best-by-held-out model.

    ``DipTrainer(frames, angles_deg, times_s, params)`` starts fresh; :meth:`from_checkpoint`
    continues a saved fit exactly. :meth:`fit` trains up to ``params.steps``;
    :meth:`best_model` is the generator with the best held-out score so far.
    """

    def __init__(self, frames: np.ndarray, angles_deg: np.ndarray, times_s: np.ndarray, params: DipParams, *,
                 device: str | torch.device | None = None, geometry: DipGeometry | None = None):
        device = resolve_device(params.device if device is None else device)
        frames = np.asarray(frames, dtype=np.float32)
        nz = params.vol_z or (frames.shape[2] if frames.ndim == 3 else 1)
        data = SeriesData(frames, angles_deg, times_s, heldout_fraction=params.heldout_fraction,
                          vol_z=nz, device=device, axis_offset_px=params.axis_offset_px)
        self._setup(data, params, geometry)

    def _setup(self, data: SeriesData, params: DipParams, geometry: DipGeometry | None) -> None:
        """Generator, optimiser and sampler for ``data`` (a :class:`SeriesData` or a growing one)."""
        self.params = params
        self.data = d = data
        self.device = data.device
        if geometry is None:
            geometry = DipGeometry(d.shape, (float(d.times_s.min()), float(d.times_s.max())), d.value_scale)
        elif geometry.shape != d.shape:
            raise ValueError(f"geometry: expected volume shape {d.shape} for these frames, got {geometry.shape}")
        start = min(max(d.mean_value / geometry.value_scale, 1e-3), 1.0)
        self.model = build_generator(geometry, params, generator=torch.Generator().manual_seed(params.seed),
                                     start_value=start)
        self.model.to(self.device)
        # the averaged weights (ema_decay > 0) are what is scored, kept as best and returned
        self.ema_model = copy.deepcopy(self.model) if params.ema_decay > 0 else None
        self.shifts = torch.nn.Parameter(torch.zeros(d.n, 2, device=self.device)) if params.frame_shifts else None
        trainable = list(self.model.parameters()) + ([self.shifts] if self.shifts is not None else [])
        self.optimizer = torch.optim.Adam(trainable, lr=params.lr)
        self.sampler = self._make_sampler()
        self.step = 0
        self.best_step = 0
        self.best_score = math.inf
        self.best_state = _cpu_state(self.eval_model)
        self.best_shifts = None if self.shifts is None else self.shifts.detach().cpu().clone()
        self.evals_since_best = 0
        self.loss_history: list[tuple[int, float]] = []
        self.heldout_history: list[tuple[int, float]] = []
        self.last_loss = math.nan
        self._amp_dtype = _amp_dtype(params.amp, self.device)
        self._scaler = torch.amp.GradScaler("cuda") if self._amp_dtype == torch.float16 else None
        self._forward = self.model
        if params.compile and self.device.type == "cuda":
            self._forward = torch.compile(self.model)
        elif params.compile:
            log.info("torch.compile is used on CUDA only; running the generator eagerly on %s", self.device)
        self._sqrt_h = (ramp_filter(d.nu, params.ramp_floor, self.device) if params.residual_filter == "ramp"
                        else None)

    def _make_sampler(self) -> BatchSampler:
        p = self.params
        return BatchSampler(self.data.train_idx, self.data.ny, batch_frames=p.batch_frames,
                            batch_rows=p.batch_rows, seed=p.seed)

    def learning_rate(self) -> float:
        """The learning rate of the next step (a function of the step count alone)."""
        return learning_rate(self.step, self.params)

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        g = self.model.geom
        return {
            "params": self.params.as_dict(),
            "geometry": {"shape": list(g.shape), "t_range_s": list(g.t_range_s), "value_scale": g.value_scale},
            "digest": self.data.digest,
            "step": self.step,
            "model": _cpu_state(self.model),
            "ema_model": None if self.ema_model is None else _cpu_state(self.ema_model),
            "best_model": self.best_state,
            "best_step": self.best_step,
            "best_score": self.best_score,
            "evals_since_best": self.evals_since_best,
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "shifts": None if self.shifts is None else self.shifts.detach().cpu(),
            "best_shifts": self.best_shifts,
            "scaler": None if self._scaler is None else self._scaler.state_dict(),
            "loss_history": [list(v) for v in self.loss_history],
            "heldout_history": [list(v) for v in self.heldout_history],
        }

    def save(self, path: str | os.PathLike) -> None:
        save_checkpoint(path, self.state_dict())

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, frames: np.ndarray, angles_deg: np.ndarray,
                        times_s: np.ndarray, params: DipParams | None = None, *,
                        device: str | torch.device | None = None) -> "DipTrainer":
        """Continue the fit saved in ``path`` on the same data. ``params`` may change only
        :attr:`DipParams.RESUMABLE_CHANGES` (e.g. more ``steps``); None keeps the saved ones."""
        state = read_checkpoint(path)
        saved = DipParams.from_dict(state["params"])
        if params is None:
            params = saved
        changed = sorted(k for k, v in params.as_dict().items()
                         if v != getattr(saved, k) and k not in DipParams.RESUMABLE_CHANGES)
        if changed:
            raise ValueError(f"{path}: cannot resume with changed parameter(s) {changed}; "
                             f"the checkpoint has {[f'{k}={getattr(saved, k)!r}' for k in changed]}")
        trainer = cls(frames, angles_deg, times_s, params, device=device, geometry=geometry_from_state(state))
        if state["digest"] != trainer.data.digest:
            raise ValueError(f"{path}: checkpoint was fitted to other data (digest {state['digest']}, "
                             f"these frames give {trainer.data.digest})")
        trainer._load_state(state)
        return trainer

    def _load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema_model is not None:
            self.ema_model.load_state_dict(state["ema_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        if self.shifts is not None:
            with torch.no_grad():
                self.shifts.copy_(state["shifts"].to(self.device))
        if self._scaler is not None and state.get("scaler") is not None:
            self._scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_state = state["best_model"]
        self.best_shifts = state["best_shifts"]
        self.best_step = int(state["best_step"])
        self.best_score = float(state["best_score"])
        self.evals_since_best = int(state["evals_since_best"])
        self.loss_history = [(int(s), float(v)) for s, v in state["loss_history"]]
        self.heldout_history = [(int(s), float(v)) for s, v in state["heldout_history"]]

    # -- model queries ------------------------------------------------------------------------
    @property
    def eval_model(self) -> SpaceTimeGenerator:
        """The generator that is scored and returned: the weight average if ``ema_decay`` > 0."""
        return self.ema_model if self.ema_model is not None else self.model

    def best_model(self) -> SpaceTimeGenerator:
        """A copy of the generator with the best held-out score (the latest one without held-out frames)."""
        model = copy.deepcopy(self.eval_model)
        if self.data.heldout_idx.size:
            model.load_state_dict(self.best_state)
        return model.eval()

    def frame_shifts(self) -> np.ndarray | None:
        """(N, 2) fitted (dy, du) shift per frame in pixels (held-out frames interpolated in time)."""
        return None if self.shifts is None else self._effective_shifts().detach().cpu().numpy()

    # -- one step -----------------------------------------------------------------------------
    def _effective_shifts(self) -> torch.Tensor:
        """Shifts with the training frames' mean removed (a common shift is the volume's position);
        held-out frames get the shift interpolated in time from the training frames."""
        d = self.data
        train = torch.as_tensor(d.train_idx, device=self.device)
        eff = self.shifts - self.shifts[train].mean(0)
        if d.heldout_idx.size:
            tt, th = d.times_s[d.train_idx], d.times_s[d.heldout_idx]
            src = eff.detach()[train].cpu().numpy()
            held = np.stack([np.interp(th, tt, src[:, k]) for k in range(2)], axis=1)
            eff = eff.clone()
            eff[torch.as_tensor(d.heldout_idx, device=self.device)] = torch.as_tensor(
                held, device=self.device, dtype=eff.dtype)
        return eff

    def _predict(self, frame_idx: torch.Tensor, rows: torch.Tensor, *, grad: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Slices (F, R, Z, X) and predicted rows (F, R, U) for ``rows`` (F, R) of frames ``frame_idx``."""
        d = self.data
        y = rows.to(torch.float32)
        shifts = self._effective_shifts()[frame_idx] if self.shifts is not None else None
        if shifts is not None:
            y = y - shifts[:, :1]
        net = self._forward if grad else self.eval_model
        slices = self._slices(net, d.times[frame_idx], frame_idx, y, amp=grad)
        mats = frame_matrices(d.angles_deg[frame_idx.cpu().numpy()], (d.nz, d.nu), d.nu,
                              axis_offset_px=self.params.axis_offset_px, device=self.device)
        pred = project_frames(slices, mats)
        if shifts is not None:
            pred = shift_rows(pred, shifts[:, 1])
        return slices, pred

    def _slices(self, net: torch.nn.Module, t_s: torch.Tensor, frame_idx: torch.Tensor, y: torch.Tensor, *,
                amp: bool = True) -> torch.Tensor:
        """Slices (F, R, Z, X) from ``net`` at times ``t_s`` (F,) and row positions ``y`` (F, R) of frames
        ``frame_idx`` (their angles, with ``use_angle``); autocast to the AMP dtype if ``amp``."""
        d = self.data
        f, r = y.shape
        t = t_s.reshape(-1, 1).expand(f, r).reshape(-1)
        ang = d.angles[frame_idx].reshape(-1, 1).expand(f, r).reshape(-1) if self.params.use_angle else None
        with torch.autocast(self.device.type, dtype=self._amp_dtype or torch.float32,
                            enabled=amp and self._amp_dtype is not None):
            slices = net(t, y.reshape(-1), ang)
        return slices.float().reshape(f, r, d.nz, d.nu)

    def _next_batch(self) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This process's frames (F,) and rows (F, R) of the next batch, and the weight of its loss
        (one process: the whole batch, weight 1; see :mod:`tiltstream.recon.dip.distributed`)."""
        frame_idx, rows = self.sampler.next()
        return frame_idx, rows, 1.0

    def _batch_loss(self, local: torch.Tensor, weight: float) -> float:
        """The whole batch's loss from this process's loss on its part of the batch."""
        return float(local)

    def train_step(self) -> float:
        """One optimiser step on the next batch; returns the loss."""
        d, p = self.data, self.params
        frame_idx, rows, weight = self._next_batch()
        frame_idx, rows = frame_idx.to(self.device), rows.to(self.device)
        for group in self.optimizer.param_groups:
            group["lr"] = self.learning_rate()
        self.model.train()
        slices, pred = self._predict(frame_idx, rows, grad=True)
        meas = d.frames[frame_idx.reshape(-1, 1), rows]
        loss = data_loss(pred, meas, p, d.data_scale, self._sqrt_h)
        unit = self.model.geom.value_scale
        if p.tv_weight > 0:
            loss = loss + (p.tv_weight / unit) * tv_3d(slices, along_rows=p.batch_rows is None)
        if p.tv_time_weight > 0:
            loss = loss + (p.tv_time_weight / unit) * self._temporal_tv(frame_idx, rows, slices)
        if self.shifts is not None and p.shift_weight > 0:
            loss = loss + p.shift_weight * self._effective_shifts()[frame_idx].square().mean()
        self.optimizer.zero_grad(set_to_none=True)
        weighted = loss * weight if weight != 1.0 else loss
        (weighted if self._scaler is None else self._scaler.scale(weighted)).backward()
        self._after_backward()
        if self._scaler is not None:
            self._scaler.step(self.optimizer)
            self._scaler.update()
        else:
            self.optimizer.step()
        if self.ema_model is not None:
            decay = min(p.ema_decay, (1.0 + self.step) / (10.0 + self.step))
            with torch.no_grad():
                for e, m in zip(self.ema_model.parameters(), self.model.parameters()):
                    e.lerp_(m, 1.0 - decay)
        self.step += 1
        return self._batch_loss(loss.detach(), weight)

    def _after_backward(self) -> None:
        """Gradients of this process are complete (the data-parallel trainer averages the ones DDP does not)."""

    def _temporal_tv(self, frame_idx: torch.Tensor, rows: torch.Tensor, slices: torch.Tensor) -> torch.Tensor:
        """TV between the batch's slices and the same rows Δt later (every k-th row, ≤ 8 per frame)."""
        d = self.data
        r = rows.shape[1]
        sub = torch.arange(0, r, max(1, r // 8), device=rows.device)
        t = d.times[frame_idx] + self.params.tv_time_frames * d.frame_interval_s
        later = self._slices(self._forward, t, frame_idx, rows[:, sub].to(torch.float32))
        return (later - slices[:, sub]).abs().mean()

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def heldout_nrmse(self, frame_idx: np.ndarray | None = None) -> float | None:
        """‖predicted − measured‖ / ‖measured‖ over the held-out frames (all rows); None without any."""
        idx = self.data.heldout_idx if frame_idx is None else np.asarray(frame_idx)
        if idx.size == 0:
            return None
        d = self.data
        num = den = 0.0
        chunk = max(1, 2 * self.params.batch_frames)
        rows_all = torch.arange(d.ny, device=self.device)
        for k in range(0, idx.size, chunk):
            fi = torch.as_tensor(idx[k:k + chunk], device=self.device)
            rows = rows_all.expand(fi.numel(), -1)
            _, pred = self._predict(fi, rows, grad=False)
            meas = d.frames[fi]
            num += float((pred - meas).double().square().sum())
            den += float(meas.double().square().sum())
        return math.sqrt(num / den) if den > 0 else math.inf

    def _evaluate(self) -> float | None:
        score = self.heldout_nrmse()
        if score is None:
            return None
        self.heldout_history.append((self.step, score))
        if score < self.best_score:
            self.best_score, self.best_step, self.evals_since_best = score, self.step, 0
            self.best_state = _cpu_state(self.eval_model)
            if self.shifts is not None:
                self.best_shifts = self.shifts.detach().cpu().clone()
        else:
            self.evals_since_best += 1
        return score

    # -- the loop -----------------------------------------------------------------------------
    def fit(self, *, progress: Callable[..., Any] | None = None, checkpoint: str | os.PathLike | None = None,
            callbacks: Iterable[Callable[[DipState], bool | None]] = ()) -> str:
        """Train up to ``params.steps``; evaluate every ``eval_every`` steps and at the end; returns
        why it stopped: ``"steps"``, ``"patience"``, ``"time_limit"`` or ``"callback"``.

        ``progress(n, loss=..., heldout=...)`` is called every few steps with the number of steps
        done since its previous call; on a resumed fit the first call also counts the steps done
        before the checkpoint, so the calls sum to the current step count.
        """
        p = self.params
        callbacks = list(callbacks)
        t0 = time.perf_counter()
        reported = 0  # the first progress call also counts the steps of a resumed checkpoint
        heldout = self.heldout_history[-1][1] if self.heldout_history else None
        reason = "steps"
        loss_sum, loss_n = 0.0, 0
        start_step = self.step
        while self.step < p.steps:
            loss = self.train_step()
            if not math.isfinite(loss):
                raise FloatingPointError(f"DIP loss became {loss} at step {self.step}; lower lr (now {p.lr})")
            loss_sum, loss_n = loss_sum + loss, loss_n + 1
            last = self.step >= p.steps
            timed_out = p.time_limit_s is not None and time.perf_counter() - t0 >= p.time_limit_s
            if self.step % p.eval_every == 0 or last or timed_out:
                self.last_loss = loss_sum / loss_n
                self.loss_history.append((self.step, self.last_loss))
                loss_sum, loss_n = 0.0, 0
                heldout = self._evaluate()
                if checkpoint is not None:
                    self.save(checkpoint)
                state = DipState(self.step, self.last_loss, heldout, self.best_step, self.eval_model)
                if any(bool(cb(state)) for cb in callbacks):
                    reason = "callback"
                elif p.patience is not None and self.evals_since_best >= p.patience:
                    reason = "patience"
                elif timed_out:
                    reason = "time_limit"
            if progress is not None and (self.step - reported >= _PROGRESS_EVERY or last or reason != "steps"):
                progress(self.step - reported, loss=loss, heldout=heldout)
                reported = self.step
            if reason != "steps":
                break
        if checkpoint is not None and self.step == start_step:
            self.save(checkpoint)
        wall = time.perf_counter() - t0
        log.info("DIP: %d steps in %.1f s (%s); best held-out NRMSE %.4f at step %d", self.step - start_step,
                 wall, reason, self.best_score, self.best_step)
        self._last_run = {"wall_s": wall, "steps_run": self.step - start_step, "start_step": start_step,
                          "stopped": reason}
        return reason

    def info(self) -> dict[str, Any]:
        """JSON-able summary: histories, best step and score, split, timing of the last :meth:`fit`."""
        run = getattr(self, "_last_run", {"wall_s": 0.0, "steps_run": 0, "start_step": self.step, "stopped": "none"})
        return {
            "method": "dip",
            "step": self.step,
            **run,
            "steps_per_s": run["steps_run"] / run["wall_s"] if run["wall_s"] > 0 else float("nan"),
            "best_step": self.best_step,
            "heldout_nrmse": None if not math.isfinite(self.best_score) else self.best_score,
            "heldout_history": [list(v) for v in self.heldout_history],
            "loss_history": [list(v) for v in self.loss_history],
            "n_train": int(self.data.train_idx.size),
            "heldout_indices": self.data.heldout_idx.tolist(),
            "device": str(self.device),
            "amp": None if self._amp_dtype is None else str(self._amp_dtype).replace("torch.", ""),
            "parameters": self.params.as_dict(),
        }


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda":
        if amp not in ("auto", "off"):
            log.info("mixed precision is used on CUDA only; ignoring amp=%r on %s", amp, device)
        return None
    if amp == "off":
        return None
    if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


def default_query_times(times_s: np.ndarray, n: int = 12) -> np.ndarray:
    """``n`` evenly spaced times (s) from the first to the last frame: the DIP answers at any time."""
    t = np.asarray(times_s, dtype=np.float64)
    return np.linspace(float(t.min()), float(t.max()), max(1, int(n)))


def reconstruct_dip(
    frames: np.ndarray,
    angles_deg: np.ndarray,
    times_s: np.ndarray,
    query_times_s: Sequence[float],
    params: DipParams | None = None,
    *,
    device: str | torch.device | None = None,
    progress: Callable[..., Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: str | os.PathLike | None = None,
    callbacks: Iterable[Callable[[DipState], bool | None]] = (),
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit the DIP space-time model to frames (N, Y, U) and return the volumes at ``query_times_s``.

    Returns ``(volumes (T, Z, Y, X) float32, info)``; the volumes come from the model with the best
    held-out score, and ``info`` (JSON-able) has the held-out and loss histories, the best step and
    score, timing and the parameters. ``device`` overrides ``params.device``. ``checkpoint``: file
    written at every evaluation (resumable). ``resume``: a checkpoint to continue from (same data;
    ``params`` may raise ``steps``; None keeps the checkpoint's parameters).
    ``progress(n, loss=..., heldout=...)``: see :meth:`DipTrainer.fit`.
    """
    if resume is not None:
        trainer = DipTrainer.from_checkpoint(resume, frames, angles_deg, times_s, params, device=device)
    else:
        trainer = DipTrainer(frames, angles_deg, times_s, params or DipParams(), device=device)
    trainer.fit(progress=progress, checkpoint=checkpoint, callbacks=callbacks)
    volumes = trainer.best_model().volumes(query_times_s)
    info = trainer.info()
    info["query_times_s"] = [float(t) for t in np.asarray(query_times_s, dtype=np.float64).reshape(-1)]
    return volumes, info

