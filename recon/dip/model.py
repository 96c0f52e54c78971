"""The space-time generator: (time, tilt-axis position[, angle]) → one (Z, X) slice of the volume.

coordinates → Fourier encoding → mapping MLP → coarse feature map → CNN decoder (upsample + 3×3
convolutions, a sub-pixel last stage) → positive slice. Querying every Y position at one time gives
the volume at that time; time is continuous, so any t can be asked for, not only frame times.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tiltstream.recon.dip.params import DipParams

__all__ = ["DipGeometry", "FourierEncoding", "SpaceTimeGenerator", "build_generator"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DipGeometry:
    """What the generator maps onto: volume shape (Z, Y, X), the time span it covers (s) and the
    value scale of its voxels (the output unit, so the network works with O(1) numbers)."""

    shape: tuple[int, int, int]
    t_range_s: tuple[float, float]
    value_scale: float

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape: expected 3 positive sizes (Z, Y, X), got {self.shape}")
        t0, t1 = (float(v) for v in self.t_range_s)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 >= t0):
            raise ValueError(f"t_range_s: expected finite (start, end) with end ≥ start, got {self.t_range_s}")
        if not (math.isfinite(self.value_scale) and self.value_scale > 0):
            raise ValueError(f"value_scale: expected a positive number, got {self.value_scale}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "t_range_s", (t0, t1))

    def t_norm(self, t_s: torch.Tensor) -> torch.Tensor:
        """Seconds → [-1, 1] over the covered span (clamped: the model knows nothing outside it)."""
        t0, t1 = self.t_range_s
        half = max(0.5 * (t1 - t0), 1e-9)
        return ((t_s - 0.5 * (t0 + t1)) / half).clamp(-1.0, 1.0)

    def y_norm(self, y: torch.Tensor) -> torch.Tensor:
        """Row index (continuous, 0 … Y−1) → [-1, 1]."""
        ny = self.shape[1]
        return (y - 0.5 * (ny - 1)) / max(0.5 * ny, 0.5)


class FourierEncoding(nn.Module):
    """x ∈ [-1, 1] → (x, sin(2ᵏπx), cos(2ᵏπx) for k < n_octaves)."""

    def __init__(self, n_octaves: int):
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(n_octaves, dtype=torch.float32), persistent=False)

    @property
    def out_features(self) -> int:
        return 1 + 2 * self.freqs.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(-1, 1)
        arg = x * self.freqs.to(x.dtype)
        return torch.cat([x, torch.sin(arg), torch.cos(arg)], dim=1)


def _decoder_plan(nz: int, nx: int, base: int, width: int, min_width: int) -> tuple[tuple[int, int], list[int]]:
    """Coarsest map size and channels per stage: ``len(channels)`` upsampling stages of ×2 reach at
    least (nz, nx) from the coarse map (the last one is the sub-pixel output layer)."""
    n_up = max(1, math.ceil(math.log2(max(nz, nx) / base)))
    h0, w0 = math.ceil(nz / 2**n_up), math.ceil(nx / 2**n_up)
    channels = [max(min_width, width >> k) for k in range(n_up)]
    return (h0, w0), channels


class SpaceTimeGenerator(nn.Module):
    """(t, y[, θ]) → (Z, X) slice. Build with :func:`build_generator`.

    ``forward(t_s, y, angle_deg=None)`` takes (B,) times in s, (B,) row positions (continuous row
    index) and optionally (B,) angles in degrees, and returns (B, Z, X) slices in the data's units.
    """

    def __init__(self, geom: DipGeometry, params: DipParams):
        super().__init__()
        self.geom = geom
        self.use_angle = params.use_angle
        self.query_angle_deg = params.query_angle_deg
        self.enc_t = FourierEncoding(params.t_frequencies)
        self.enc_y = FourierEncoding(params.y_frequencies)
        n_in = self.enc_t.out_features + self.enc_y.out_features + (2 if self.use_angle else 0)
        nz, _, nx = geom.shape
        (h0, w0), channels = _decoder_plan(nz, nx, params.decoder_base, params.decoder_width,
                                           params.decoder_min_width)
        self.coarse = (h0, w0)
        layers: list[nn.Module] = []
        width = n_in
        for _ in range(params.mlp_depth):
            layers += [nn.Linear(width, params.mlp_width), nn.SiLU()]
            width = params.mlp_width
        layers.append(nn.Linear(width, channels[0] * h0 * w0))
        self.mapping = nn.Sequential(*layers)
        stages: list[nn.Module] = []
        c_in = channels[0]
        for c_out in channels[1:]:
            block: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")]
            for k in range(params.convs_per_stage):
                block += [nn.Conv2d(c_in if k == 0 else c_out, c_out, 3, padding=1), nn.SiLU()]
            stages.append(nn.Sequential(*block))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        # last ×2 stage: sub-pixel convolution (3×3 conv to 4 channels + pixel shuffle), cheap at full size
        self.head = nn.Sequential(nn.Conv2d(c_in, 4, 3, padding=1), nn.PixelShuffle(2))
        self.output = params.output
        self.channels = tuple(channels)

    def double_time_span(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Double the covered time span from its start, keeping the function of time the model has
        learnt: after ``t_range_s = (t0, t1) → (t0, 2 t1 − t0)`` the normalised time of every old time
        is ``x' = (x − 1) / 2``, so octave k of the new encoding equals octave k − 1 of the old one
        (octave 1 the negated old octave 0; octave 0 is new; the linear term doubles and shifts the
        bias). The first layer's time columns are moved accordingly (and ``optimizer``'s moments with
        them). Exact but for the old highest octave, which has no place in the new encoding."""
        t0, t1 = self.geom.t_range_s
        self.geom = replace(self.geom, t_range_s=(t0, t0 + 2.0 * (t1 - t0)))
        first = self.mapping[0]
        k = self.enc_t.freqs.numel()
        sin, cos = slice(1, 1 + k), slice(1 + k, 1 + 2 * k)

        def move(w: torch.Tensor, *, signed: bool) -> None:
            for cols in (sin, cos):
                old = w[:, cols].clone()
                w[:, cols] = 0.0
                if k > 1:
                    w[:, cols.start + 1] = -old[:, 0] if signed else old[:, 0]
                    w[:, cols.start + 2:cols.stop] = old[:, 1:k - 1]

        with torch.no_grad():
            w = first.weight
            first.bias.add_(w[:, 0])  # x_old = 2 x_new + 1
            w[:, 0].mul_(2.0)
            move(w, signed=True)
            state = {} if optimizer is None else optimizer.state.get(first.weight, {})
            if "exp_avg" in state:
                state["exp_avg"][:, 0].mul_(2.0)
                move(state["exp_avg"], signed=True)
            if "exp_avg_sq" in state:
                state["exp_avg_sq"][:, 0].mul_(4.0)
                move(state["exp_avg_sq"], signed=False)

    # -- construction -------------------------------------------------------------------------
    def reset_parameters(self, generator: torch.Generator, *, start_value: float = 0.1) -> None:
        """Initialise every weight from ``generator`` (no global RNG). The output layer starts small,
        with a bias that makes the first volume about ``start_value`` × ``value_scale`` everywhere."""
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, (nn.Linear, nn.Conv2d)):
                    fan_in = m.weight[0].numel()
                    bound = math.sqrt(6.0 / fan_in)  # He-uniform
                    m.weight.copy_(torch.empty_like(m.weight, device="cpu").uniform_(-bound, bound,
                                                                                    generator=generator))
                    m.bias.zero_()
            last = self.head[0]
            last.weight.mul_(0.1)
            if self.output == "softplus":
                last.bias.fill_(math.log(math.expm1(start_value)))  # softplus⁻¹(start_value)
            else:
                last.bias.fill_(start_value)

    # -- evaluation ---------------------------------------------------------------------------
    def encode(self, t_s: torch.Tensor, y: torch.Tensor, angle_deg: torch.Tensor | None = None) -> torch.Tensor:
        feats = [self.enc_t(self.geom.t_norm(t_s)), self.enc_y(self.geom.y_norm(y))]
        if self.use_angle:
            if angle_deg is None:
                angle_deg = torch.full_like(t_s, float(self.query_angle_deg))
            a = torch.deg2rad(angle_deg).reshape(-1, 1)
            feats.append(torch.cat([torch.cos(a), torch.sin(a)], dim=1))
        return torch.cat(feats, dim=1)

    def forward(self, t_s: torch.Tensor, y: torch.Tensor, angle_deg: torch.Tensor | None = None) -> torch.Tensor:
        if t_s.shape != y.shape or t_s.ndim != 1:
            raise ValueError(f"t_s, y: expected two (B,) tensors, got {tuple(t_s.shape)} and {tuple(y.shape)}")
        code = self.mapping(self.encode(t_s, y, angle_deg))
        h0, w0 = self.coarse
        x = code.reshape(-1, self.channels[0], h0, w0)
        if x.device.type == "cpu":  # oneDNN convolutions are ~3× faster channels-last on CPU
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.head(self.stages(x))
        nz, _, nx = self.geom.shape
        dz, dx = (x.shape[-2] - nz) // 2, (x.shape[-1] - nx) // 2
        x = x[:, 0, dz:dz + nz, dx:dx + nx]
        if x.dtype in (torch.float16, torch.bfloat16):  # autocast: the output and the loss stay fp32
            x = x.float()
        # clamp: softplus below −30 is < 1e-13 anyway, and denormal floats would slow the CPU ~10×
        x = F.softplus(x.clamp(min=-30.0)) if self.output == "softplus" else F.relu(x)
        return x * self.geom.value_scale

    @torch.no_grad()
    def volume(self, t_s: float, *, angle_deg: float | None = None) -> np.ndarray:
        """The (Z, Y, X) float32 volume at time ``t_s`` (s), any time within the covered span."""
        return self.volumes([t_s], angle_deg=angle_deg)[0]

    @torch.no_grad()
    def volumes(self, times_s, *, angle_deg: float | None = None, chunk: int = 1024) -> np.ndarray:
        """(T, Z, Y, X) float32 volumes at ``times_s`` (s)."""
        was_training = self.training
        self.eval()
        dev = next(self.parameters()).device
        nz, ny, nx = self.geom.shape
        times = np.asarray(times_s, dtype=np.float64).reshape(-1)
        out = np.empty((times.size, nz, ny, nx), dtype=np.float32)
        ys = torch.arange(ny, device=dev, dtype=torch.float32)
        for i, t in enumerate(times):
            tt = torch.full((ny,), float(t), device=dev, dtype=torch.float32)
            ang = None if angle_deg is None else torch.full((ny,), float(angle_deg), device=dev)
            sl = torch.cat([self(tt[k:k + chunk], ys[k:k + chunk], None if ang is None else ang[k:k + chunk])
                            for k in range(0, ny, chunk)])
            out[i] = sl.permute(1, 0, 2).cpu().numpy()  # (Y, Z, X) → (Z, Y, X)
        self.train(was_training)
        return out


def build_generator(geom: DipGeometry, params: DipParams, *, generator: torch.Generator,
                    start_value: float = 0.1) -> SpaceTimeGenerator:
    """A freshly initialised generator (weights drawn from ``generator``) on the CPU, starting from a
    uniform volume of about ``start_value`` × ``geom.value_scale``."""
    model = SpaceTimeGenerator(geom, params)
    model.reset_parameters(generator, start_value=start_value)
    n = sum(p.numel() for p in model.parameters())
    log.debug("DIP generator: coarse map %s, channels %s, %d parameters", model.coarse, model.channels, n)
    return model
