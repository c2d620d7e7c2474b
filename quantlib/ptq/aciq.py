"""ACIQ (Banner et al. 2019): analytical clipping. Each quantised tensor is fitted with a Laplace (or Gaussian)
density around 0, and its clip is the alpha that minimises the expected quantisation error

    Laplace(b), signed grid [-alpha, alpha]:  E(alpha) = 2 b^2 exp(-alpha / b) + alpha^2 / (3 * 4^M)
    Gaussian(sigma), signed:                  E(alpha) = 2 [(alpha^2 + sigma^2) Q(alpha / sigma)
                                                            - alpha sigma phi(alpha / sigma)] + alpha^2 / (3 * 4^M)

(M bits; Q the Gaussian tail, phi its density): clipping noise of both tails plus rounding noise over the range. An
unsigned grid [0, alpha] (ReLU outputs) clips one tail and has steps alpha / 2^M: the first term halves and the last
is alpha^2 / (12 * 4^M). b = E|x| and sigma^2 = E[x^2] (over x > 0 for unsigned tensors), per output channel for
per-channel weights. Biases are then corrected as in ``bias_correction``. ``aciq_mix`` blends each clip with the
MSE-optimal clip of the observed values: ``mix_ratio * alpha_aciq + (1 - mix_ratio) * alpha_mse`` (on the scales,
which are proportional to the clips).

With ``bit_allocation`` (the paper's per-channel bit allocation, for per-channel weights below 8 bits) the channels
of a layer share its budget of ``C * 2^M`` quantisation levels: minimising the summed rounding noise
``alpha_i^2 / n_i^2`` under ``sum n_i = C 2^M`` gives ``n_i = C 2^M alpha_i^(2/3) / sum_j alpha_j^(2/3)`` (alpha_i
the channel's M-bit clip), rounded to integers from 2 to 256. Each channel is then clipped at the optimal alpha for
its n_i levels, its weights clipped to its n_i levels of step ``2 alpha_i / n_i``, and stored in an 8-bit grid."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx

from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.ptq.bias_correction import BiasCorrection
from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.scope import Scope, scope_tensors
from quantlib.quantised_layers import respec_bits
from quantlib.scale_ties import harmonise_scales
from quantlib.specs import QHParamsInitStrategy

DISTRIBUTIONS = ("laplace", "gauss")


def expected_error(alpha: float, spread: float, bits: int, distribution: str, signed: bool) -> float:
    """E(alpha) of the module doc for a density of scale ``spread`` (b or sigma)."""
    z = alpha / spread
    if distribution == "laplace":
        clipping = 2.0 * spread ** 2 * math.exp(-z)
    else:
        tail = 0.5 * math.erfc(z / math.sqrt(2.0))
        density = math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        clipping = 2.0 * ((alpha ** 2 + spread ** 2) * tail - alpha * spread * density)
    if signed:
        return clipping + alpha ** 2 / (3.0 * 4.0 ** bits)
    return clipping / 2.0 + alpha ** 2 / (12.0 * 4.0 ** bits)


def optimal_clip(spread: float, bits: int, distribution: str = "laplace", signed: bool = True) -> float:
    """The alpha that minimises ``expected_error`` (E is unimodal in alpha: golden-section search on [0, 40 spread])."""
    if spread <= 0:
        return 0.0
    lo, hi = 0.0, 40.0 * spread
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    for _ in range(100):
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        error_a = expected_error(a, spread, bits, distribution, signed)
        if error_a < expected_error(b, spread, bits, distribution, signed):
            hi = b
        else:
            lo = a
    return (lo + hi) / 2.0


def fitted_spread(x: torch.Tensor, distribution: str, signed: bool, dims: tuple[int, ...] = ()) -> torch.Tensor:
    """b = E|x| (Laplace) or sigma = sqrt(E[x^2]) (Gaussian), over x > 0 for an unsigned grid; per slice along
    ``dims`` (per output channel: (0,)), else one value."""
    x = x.detach().double()
    if dims:
        x = x.reshape(x.shape[0], -1)
    else:
        x = x.reshape(1, -1)
    mask = torch.ones_like(x) if signed else (x > 0).double()
    count = mask.sum(dim=1).clamp_min(1.0)
    if distribution == "laplace":
        return (x.abs() * mask).sum(dim=1) / count
    return ((x * x * mask).sum(dim=1) / count).sqrt()


@dataclass(frozen=True)
class AciqParams:
    """``distribution``: 'laplace' (the paper's choice for activations) or 'gauss'; ``mix_ratio``: the weight of the
    analytical clip against the MSE-optimal one (1: ACIQ alone)."""

    distribution: str = "laplace"
    mix_ratio: float = 1.0
    bit_allocation: bool = False

    def check(self) -> str | None:
        if self.distribution not in DISTRIBUTIONS:
            return f"distribution={self.distribution!r} is not one of {DISTRIBUTIONS}."
        if not 0.0 <= self.mix_ratio <= 1.0:
            return f"mix_ratio={self.mix_ratio} must be in [0, 1]."
        if self.bit_allocation and self.mix_ratio < 1.0:
            return ("bit_allocation clips each channel for its own level count, which has no MSE clip to blend "
                    "with: use mix_ratio=1.0 (aciq) with it.")
        return None


@dataclass(frozen=True)
class AciqMixParams(AciqParams):
    """ACIQ-Mix: half analytical, half MSE-optimal by default."""

    mix_ratio: float = 0.5


class Aciq(PTQMethod):
    """Analytical clipping of every weight and activation range, then bias correction."""

    name = "aciq"
    symmetric_only = True
    Params = AciqParams

    def initial_ranges(self) -> QHParamsInitStrategy:
        return QHParamsInitStrategy("mse" if self.params.mix_ratio < 1.0 else "minmax")

    def set_ranges(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        p = self.params
        tensors = scope_tensors(gm, batches, scope)
        self.levels: dict[str, list[int]] = {}  # with bit_allocation: each allocated layer's levels per channel
        for quantiser, x in tensors.items():
            allocated = p.bit_allocation and isinstance(quantiser, (QConv2d, QLinear)) and quantiser.n_levels < 256 \
                and quantiser.spec.granularity.dims == (0,)  # a layer overridden to one scale keeps ACIQ's clip
            if allocated:
                self.levels[quantiser.qualname] = allocate_levels(quantiser, p.distribution)
            else:
                set_analytical_clip(quantiser, x, p.distribution, p.mix_ratio)
        harmonise_scales(gm)

    def check_own(self, options: PTQOptions) -> None:
        if self.params.bit_allocation and (options.pow2 or not options.per_channel):
            raise ValueError(f"PTQ method '{self.name}': bit_allocation needs per-channel weights and float scales "
                             f"(power-of-two scales would not keep each channel's level count).")

    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        BiasCorrection().refine(gm, batches, options, scope)


class AciqMix(Aciq):
    """ACIQ's clips blended with the MSE-optimal ones."""

    name = "aciq_mix"
    Params = AciqMixParams


def set_analytical_clip(quantiser: QModule, x: torch.Tensor, distribution: str, mix_ratio: float) -> None:
    """Put ``quantiser`` (already calibrated) on ACIQ's grid for the values ``x`` it quantises, 2^M steps of
    2 alpha / 2^M (signed) or alpha / 2^M (unsigned), its scale blended with the current one by ``mix_ratio``."""
    qrange = quantiser.spec.qrange
    signed = qrange.is_signed
    spreads = fitted_spread(x, distribution, signed, quantiser.spec.granularity.dims)
    current = quantiser.scale.detach()
    alpha = torch.tensor([optimal_clip(float(s), qrange.bits, distribution, signed) for s in spreads],
                         dtype=current.dtype)
    scale = (2.0 if signed else 1.0) * alpha / qrange.n_levels
    scale = scale.reshape(current.shape) if current.numel() == scale.numel() else scale[0]
    blended = mix_ratio * scale + (1.0 - mix_ratio) * current
    quantiser.set_scale(torch.where(blended > 0, blended, current))  # a tensor of zeros keeps its grid


def allocate_levels(layer: QConv2d | QLinear, distribution: str) -> list[int]:
    """Share ``layer``'s budget of levels among its output channels (the module doc), clip its weights to each
    channel's levels and put its quantiser on an 8-bit grid with the channels' steps; returns the levels."""
    w = layer.weight.detach()
    bits = layer.spec.qrange.bits
    spreads = fitted_spread(w, distribution, True, (0,))
    alphas = torch.tensor([optimal_clip(float(s), bits, distribution) for s in spreads], dtype=torch.float64)
    shares = alphas.pow(2.0 / 3.0)
    budget = len(alphas) * 2 ** bits
    levels = torch.clamp(torch.round(budget * shares / shares.sum().clamp_min(1e-30)), 2, 256).long()
    clips = torch.tensor([optimal_clip(float(s), math.log2(n), distribution) for s, n in zip(spreads, levels.tolist(),
                                                                                            strict=True)])
    steps = (2.0 * clips / levels).to(w.dtype).clamp_min(1e-12).reshape(-1, *[1] * (w.dim() - 1))
    lowest = (-(levels // 2)).to(w.dtype).reshape(steps.shape)
    highest = (levels - levels // 2 - 1).to(w.dtype).reshape(steps.shape)
    with torch.no_grad():
        layer.weight.copy_(torch.minimum(torch.maximum(w, lowest * steps), highest * steps))
    respec_bits(layer, 8)
    layer.set_scale(steps)
    layer.is_quantised = True
    return levels.tolist()
