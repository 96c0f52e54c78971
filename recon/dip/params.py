"""Parameters of the DIP space-time reconstruction (stored as provenance in result files)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

__all__ = ["DipParams", "LOSSES", "AMP_MODES"]

LOSSES = ("huber", "poisson", "l2")
AMP_MODES = ("auto", "off", "bf16", "fp16")


@dataclass(frozen=True)
class DipParams:
    """Everything that defines a DIP fit; same parameters + same data + same seed → same result (CPU).

    Training
        steps: optimiser steps in total (a resumed run continues up to this count).
        batch_frames: frames per step. batch_rows: rows per frame per step (None: whole frames,
            which also turns on the TV term along Y).
        lr, warmup_steps, lr_half_life: Adam learning rate, linear warm-up, then halved every
            ``lr_half_life`` steps (a function of the step alone, so resuming and online training
            follow the same schedule). The defaults suit fits of a few thousand steps: with a half-life
            of 500 the fit stopped far from the data (held-out NRMSE twice the truth's own) and the
            volume error was 1.35× higher after 1500 steps (benchmarks/RESULTS.md).
        loss: ``"huber"`` (robust; ``huber_delta`` in units of the data's RMS), ``"poisson"``
            (squared residual weighted by 1/measured, the Gaussian limit of Poisson noise) or ``"l2"``.
        residual_filter: ``"ramp"`` filters residual rows with √(ramp + ramp_floor) before the loss,
            so the data term's gradient is a filtered (not plain) backprojection and fine detail
            converges in far fewer steps; ``"none"`` compares raw rows.
        tv_weight: spatial 3-D TV (anisotropic, in units of the typical particle voxel value).
        tv_time_weight, tv_time_frames: temporal TV between the model at t and at t + Δt, with Δt
            ``tv_time_frames`` median frame intervals (0 = off).
        shift_weight: L2 pull toward zero of the per-frame shifts (only with ``frame_shifts``).
        ema_decay: if > 0, scores and results use an exponential moving average of the weights
            (Polyak averaging; smooths out the step-to-step jitter of the fit).
    Held-out frames and stopping
        heldout_fraction: share of frames never fitted, spread evenly over time; they score every
            ``eval_every`` steps (held-out NRMSE of predicted vs measured projections) and the best
            model by that score is the result. patience: stop after this many evaluations without
            improvement (None: never). time_limit_s: stop after this wall time (makes the result
            depend on the machine's speed).
    Generator
        t_frequencies, y_frequencies: octaves of the Fourier encoding of time and of the
            tilt-axis position; use_angle: also feed the viewing angle (then volumes are queried at
            ``query_angle_deg``).
        mlp_width, mlp_depth: the mapping MLP. decoder_width: channels at the coarsest decoder
            stage, halved per stage down to decoder_min_width. decoder_base: the coarsest stage is
            at most this many pixels wide. convs_per_stage: 3×3 convolutions per upsampling stage.
        output: ``"softplus"`` or ``"relu"`` (positivity of the volume).
    Geometry
        vol_z: volume height Z (default: detector width U). axis_offset_px: tilt-axis offset.
        frame_shifts: learn a small (dy, du) shift per frame (residual misalignment; off by default).
    Runtime
        seed, device ("auto", "cpu", "cuda", ...), amp ("auto": bf16 autocast on CUDA, off on CPU),
        compile (torch.compile the generator; CUDA only, ignored on CPU).
    """

    steps: int = 2000
    batch_frames: int = 8
    batch_rows: int | None = None
    lr: float = 5e-3
    warmup_steps: int = 50
    lr_half_life: float = 2000.0
    loss: str = "huber"
    huber_delta: float = 1.0
    residual_filter: str = "ramp"
    ramp_floor: float = 0.1
    tv_weight: float = 0.05
    tv_time_weight: float = 0.0
    tv_time_frames: float = 4.0
    ema_decay: float = 0.99
    heldout_fraction: float = 0.1
    eval_every: int = 50
    patience: int | None = None
    time_limit_s: float | None = None
    t_frequencies: int = 4
    y_frequencies: int = 6
    use_angle: bool = False
    query_angle_deg: float = 0.0
    mlp_width: int = 256
    mlp_depth: int = 3
    decoder_width: int = 64
    decoder_min_width: int = 16
    decoder_base: int = 6
    convs_per_stage: int = 1
    output: str = "softplus"
    vol_z: int | None = None
    axis_offset_px: float = 0.0
    frame_shifts: bool = False
    shift_weight: float = 1e-3
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    compile: bool = False

    def __post_init__(self) -> None:
        positive_ints = ("steps", "batch_frames", "eval_every", "mlp_width", "mlp_depth", "decoder_width",
                         "decoder_min_width", "decoder_base", "convs_per_stage")
        for name in positive_ints:
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected an integer ≥ 1, got {v!r}")
        if self.batch_rows is not None and self.batch_rows < 1:
            raise ValueError(f"batch_rows: expected None (whole frames) or ≥ 1, got {self.batch_rows}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience: expected None or ≥ 1, got {self.patience}")
        if not 0.0 <= self.heldout_fraction < 0.5:
            raise ValueError(f"heldout_fraction: expected a share in [0, 0.5), got {self.heldout_fraction}")
        for name in ("lr", "lr_half_life", "huber_delta", "tv_time_frames", "ramp_floor"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"{name}: expected a positive number, got {v}")
        for name in ("tv_weight", "tv_time_weight", "shift_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name}: expected a weight ≥ 0, got {v}")
        if self.warmup_steps < 0 or self.t_frequencies < 0 or self.y_frequencies < 0:
            raise ValueError("warmup_steps, t_frequencies, y_frequencies: expected ≥ 0")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay: expected a decay in [0, 1), got {self.ema_decay}")
        for name, allowed in (("loss", LOSSES), ("amp", AMP_MODES), ("residual_filter", ("ramp", "none")),
                              ("output", ("softplus", "relu"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}: expected one of {allowed}, got {getattr(self, name)!r}")
        if self.time_limit_s is not None and not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s: expected None or > 0 s, got {self.time_limit_s}")
        if self.vol_z is not None and self.vol_z < 1:
            raise ValueError(f"vol_z: expected None or ≥ 1, got {self.vol_z}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DipParams":
        """Inverse of :meth:`as_dict`; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"DipParams: unknown parameter(s) {unknown}")
        return cls(**d)

    #: fields that may differ between a run and the run that resumes it
    RESUMABLE_CHANGES = ("steps", "patience", "time_limit_s", "eval_every", "device", "compile")
