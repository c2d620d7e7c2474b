"""AdaRound (Nagel et al. 2020): per layer, learn whether each weight rounds down or up.

``W_soft = s * clip(floor(W / s) + h(V), lo, hi)`` with the rectified sigmoid ``h(V) = clip(sigmoid(V) (zeta - gamma)
+ gamma, 0, 1)``, zeta = 1.1, gamma = -0.1, V initialised so that h(V) is the weight's fractional part. Adam
(``quantlib.ptq.adam``) minimises ``||f(W_soft x_q) - f(W x)||^2`` (summed over channels, averaged over samples; f
the layer's ReLU when one follows) plus ``weight * sum(1 - |2 h(V) - 1|^beta)``, the regulariser off for the first
``warmup`` of the iterations and beta then annealed linearly from ``beta_start`` to ``beta_end``. x_q is the layer's
input in the quantised model with the earlier layers already rounded; the target is the float model's output, each
recorded once. Finally h is hardened: round up where V >= 0."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx as fx
from torch import nn
from tqdm import tqdm

from quantlib.modules.qactivations import QReLU
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.ptq.adam import Adam
from quantlib.ptq.bias_correction import linear_op
from quantlib.ptq.capture import capture, float_mode
from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.rtn import RANGES
from quantlib.ptq.scope import Scope
from quantlib.quantised_layers import Layer
from quantlib.specs import QHParamsInitStrategy

ZETA, GAMMA = 1.1, -0.1


@dataclass(frozen=True)
class AdaRoundParams:
    """The paper's settings except ``iters`` (20000 in the paper; 1000 suffices for small CPU models) and ``lr``
    (the paper's 1e-3 moves V too little in 1000 steps for h to reach 0 or 1: 1e-2 here); ``ranges``:
    how weight and activation ranges are set before the rounding is learned ('mse', as the reference code's weight
    quantisers; 'minmax' or 'percentile' as for RTN)."""

    iters: int = 1000
    ranges: str = "mse"
    weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    lr: float = 1e-2
    batch_size: int = 32
    seed: int = 0
    progress: bool = False

    def check(self) -> str | None:
        if self.ranges not in RANGES:
            return f"ranges={self.ranges!r} is not one of {RANGES}."
        if self.iters < 1 or self.batch_size < 1:
            return f"iters ({self.iters}) and batch_size ({self.batch_size}) must be >= 1."
        if not 0.0 <= self.warmup < 1.0:
            return f"warmup={self.warmup} must be in [0, 1)."
        if self.beta_start < self.beta_end or self.beta_end <= 0:
            return f"beta must anneal down: beta_start={self.beta_start} >= beta_end={self.beta_end} > 0."
        if self.weight < 0 or self.lr <= 0:
            return f"weight ({self.weight}) must be >= 0 and lr ({self.lr}) > 0."
        return None


def rectified_sigmoid(v: torch.Tensor) -> torch.Tensor:
    """h(V) = clip(sigmoid(V) (zeta - gamma) + gamma, 0, 1)."""
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def initial_v(rest: torch.Tensor) -> torch.Tensor:
    """V with h(V) = ``rest`` (the fractional part of W / s, in [0, 1))."""
    return -torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1.0)


def beta_at(step: int, params: AdaRoundParams) -> float | None:
    """The regulariser's beta at ``step``; None during the warm-up (regulariser off)."""
    start = params.warmup * params.iters
    if step < start:
        return None
    progress = (step - start) / max(1.0, params.iters - start)
    return params.beta_end + (params.beta_start - params.beta_end) * max(0.0, 1.0 - progress)


def rounding_regulariser(h: torch.Tensor, beta: float) -> torch.Tensor:
    """sum(1 - |2 h - 1|^beta): 0 when every h is 0 or 1."""
    return (1.0 - (2.0 * h - 1.0).abs().pow(beta)).sum()


@dataclass
class AdaRoundTrace:
    """What one layer's optimisation went through: the regulariser per step after the warm-up, the reconstruction
    loss and beta (None in the warm-up) per step, and the share of soft roundings h(V) still strictly between 0.01
    and 0.99 at the end (before they are hardened)."""

    regulariser: list[float]
    reconstruction: list[float]
    betas: list[float | None]
    undecided: float


class AdaRound(PTQMethod):
    """Learned rounding, layer by layer; after ``quantize``, ``traces`` holds each layer's ``AdaRoundTrace``."""

    name = "adaround"
    Params = AdaRoundParams

    def initial_ranges(self) -> QHParamsInitStrategy:
        return QHParamsInitStrategy(self.params.ranges)

    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        self.traces: dict[str, AdaRoundTrace] = {}
        layers = scope.layers
        with float_mode(gm):
            targets = {m: out for m, (_, out) in capture(gm, [layer.module for layer in layers], batches).items()}
        generator = torch.Generator().manual_seed(self.params.seed)
        for layer in tqdm(layers, desc="adaround", disable=not self.params.progress, leave=False):
            x, _ = capture(gm, [layer.module], batches)[layer.module]
            relu = followed_by_relu(gm, layer)
            target = torch.relu(targets[layer.module]) if relu else targets[layer.module]
            self.traces[layer.name] = adaround_layer(layer, x, target, relu, self.params, generator)


def followed_by_relu(gm: fx.GraphModule, layer: Layer) -> bool:
    """Whether the layer's only user is a quantised ReLU (whose output, not the layer's, is reconstructed)."""
    users = list(layer.node.users)
    return len(users) == 1 and users[0].op == "call_module" and isinstance(gm.get_submodule(users[0].target), QReLU)


class SoftRounding(nn.Module):
    """A layer's learned rounding: ``V`` starts at its weights' fractional parts on their grid.

    Called (as a parametrisation of the weight) it gives ``s * clip(floor(W / s) + h(V), lo, hi)``; ``hard()`` gives
    the rounded weights."""

    def __init__(self, module: QConv2d | QLinear) -> None:
        super().__init__()
        scale = module.scale.detach()
        self.scale = scale.reshape(-1, *([1] * (module.weight.dim() - 1))) if scale.numel() > 1 else scale
        zero = module.zero.reshape(self.scale.shape) if module.zero.numel() > 1 else module.zero
        self.lo, self.hi = zero, zero + module.step * (module.n_levels - 1)  # the grid's levels, learned offset too
        w = module.weight.detach()
        self.down = torch.floor(w / self.scale)
        self.v = nn.Parameter(initial_v(w / self.scale - self.down))

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        return self.scale * torch.clamp(self.down + rectified_sigmoid(self.v), self.lo, self.hi)

    def hard(self) -> torch.Tensor:
        """Round up where V >= 0."""
        return self.scale * torch.clamp(self.down + (self.v >= 0).to(self.down.dtype), self.lo, self.hi)


COLUMNS_LIMIT_BYTES = 512 * 2 ** 20
"""Largest unfolded copy of a conv's cached inputs kept for a matrix-product reconstruction (one matrix product
per step, 3x faster on CPU than conv2d and its weight gradient on small layers)."""


class ReconstructionData:
    """A layer's cached inputs and targets, served in shuffled batches (a new permutation every pass over the
    data), with the layer's op (bias included) on a batch.

    A Linear, or an ungrouped conv whose unfolded inputs fit in ``COLUMNS_LIMIT_BYTES``, is a matrix product: inputs
    are rows of ``K`` values (one per output position of each sample) and targets rows of channels, so that a batch
    is a slice; other convs run conv2d on gathered samples."""

    def __init__(self, module: QConv2d | QLinear, x: torch.Tensor, target: torch.Tensor, batch_size: int) -> None:
        self.module, self.batch_size, self.n = module, min(batch_size, x.shape[0]), x.shape[0]
        self.rows = _as_rows(module, x)
        if self.rows is not None:
            self.x = self.rows.reshape(self.n, -1, self.rows.shape[-1])  # [N, L, K]
            self.target = target.reshape(self.n, target.shape[1], -1).transpose(1, 2).contiguous()  # [N, L, C]
        else:
            self.x, self.target = x, target
        self.bias = None if module.bias is None else module.bias.detach()
        self._order: list[int] | None = None
        self._next = 0

    def batch(self, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """The next batch of (inputs, targets): the samples are shuffled once into fixed batches, which every pass
        over the data visits in a new random order (no copy of the data per pass)."""
        if self._order is None or self._next == len(self._order):
            if self._order is None:
                perm = torch.randperm(self.n, generator=generator)
                self.x, self.target = self.x[perm], self.target[perm]
            self._order = torch.randperm(self.n // self.batch_size, generator=generator).tolist()
            self._next = 0
        lo = self._order[self._next] * self.batch_size
        self._next += 1
        x, t = self.x[lo:lo + self.batch_size], self.target[lo:lo + self.batch_size]
        if self.rows is not None:
            return x.reshape(-1, x.shape[-1]), t.reshape(-1, t.shape[-1])
        return x, t

    def output(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The layer's output on a batch, with ``weight``."""
        if self.rows is not None:
            matrix = weight.reshape(weight.shape[0], -1).t()
            return x @ matrix if self.bias is None else torch.addmm(self.bias, x, matrix)
        out = linear_op(self.module, x, weight)
        return out if self.bias is None else out + self.bias.reshape(1, -1, *([1] * (out.dim() - 2)))


    def weight_grad(self, x: torch.Tensor, grad_out: torch.Tensor, weight_shape: torch.Size) -> torch.Tensor:
        """The gradient of the loss with respect to the weight, given its gradient ``grad_out`` at the output."""
        if self.rows is not None:
            return (grad_out.t() @ x).reshape(weight_shape)
        m = self.module
        return torch.nn.grad.conv2d_weight(x, weight_shape, grad_out, m.stride, m.padding, m.dilation, m.groups)


def _as_rows(module: QConv2d | QLinear, x: torch.Tensor) -> torch.Tensor | None:
    """``x`` as matrix-product rows (one per output position, [N * L, K]), or None where a conv must stay a conv."""
    if isinstance(module, QLinear):
        return x if x.dim() == 2 else None
    if module.groups != 1 or not isinstance(module.padding, tuple):
        return None
    k = module.in_channels * math.prod(module.kernel_size)
    positions = math.prod(linear_op(module, x[:1], module.weight.detach()).shape[2:])
    if x.shape[0] * k * positions * x.element_size() > COLUMNS_LIMIT_BYTES:
        return None
    columns = nn.functional.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)
    return columns.transpose(1, 2).reshape(-1, k)  # [N * L, K]


def adaround_layer(layer: Layer, x: torch.Tensor, target: torch.Tensor, relu: bool, params: AdaRoundParams,
                   generator: torch.Generator) -> AdaRoundTrace:
    """Learn the rounding of ``layer``'s weights on inputs ``x`` towards ``target`` (through a ReLU if ``relu``);
    write the rounded weights."""
    module: QConv2d | QLinear = layer.module
    rounding = SoftRounding(module)
    v = rounding.v.detach()  # updated by the hand-written step, not by autograd
    optimiser = Adam([v], lr=params.lr)
    data = ReconstructionData(module, x, target, params.batch_size)
    reconstructions, regularisers, betas = [], [], []
    for step in range(params.iters):
        xb, tb = data.batch(generator)
        beta = beta_at(step, params)
        loss = soft_rounding_loss(v, rounding.down, rounding.scale, rounding.lo, rounding.hi, data, xb, tb, relu,
                                  beta, params.weight)
        optimiser.step([loss.grad_v])
        reconstructions.append(loss.reconstruction)
        if beta is not None:
            regularisers.append(loss.regulariser)
        betas.append(beta)
    h = rectified_sigmoid(v)
    with torch.no_grad():
        module.weight.copy_(rounding.hard())
    return AdaRoundTrace(torch.stack(regularisers).tolist() if regularisers else [],
                         torch.stack(reconstructions).tolist(), betas, float(((h > 0.01) & (h < 0.99)).float().mean()))


@dataclass(frozen=True)
class SoftRoundingLoss:
    """One step's reconstruction loss, regulariser (0 in the warm-up) and gradient of the total with respect to V."""

    reconstruction: torch.Tensor
    regulariser: torch.Tensor
    grad_v: torch.Tensor


def soft_rounding_loss(v: torch.Tensor, down: torch.Tensor, scale: torch.Tensor, lo: int, hi: int,
                       data: ReconstructionData, x: torch.Tensor, target: torch.Tensor, relu: bool,
                       beta: float | None, weight: float) -> SoftRoundingLoss:
    """AdaRound's objective on one batch and its gradient, written out by hand: the step is a few small tensor ops
    whose autograd bookkeeping would cost more than the arithmetic (tests compare it with autograd)."""
    sig = torch.sigmoid(v)
    stretched = sig * (ZETA - GAMMA) + GAMMA
    h = stretched.clamp(0.0, 1.0)
    levels = down + h
    clipped = levels.clamp(lo, hi)
    out = data.output(x, scale * clipped)
    residual = (torch.relu(out) if relu else out) - target
    flat = residual.reshape(-1)
    positions = residual.numel() // residual.shape[1]
    reconstruction = torch.dot(flat, flat) / positions  # summed over channels, averaged over samples and positions
    grad_out = residual.masked_fill_(out <= 0, 0.0) if relu else residual  # the residual is not needed after
    grad_h = data.weight_grad(x, grad_out, v.shape).mul_(2.0 / positions)
    grad_h.masked_fill_(clipped != levels, 0.0).mul_(scale)
    regulariser = torch.zeros(())
    if beta is not None:
        centred = 2.0 * h - 1.0
        magnitude = centred.abs()
        power = magnitude.pow(beta - 1.0)
        regulariser = (1.0 - power * magnitude).sum()
        grad_h.sub_(power.mul_(centred.sign_()), alpha=weight * 2.0 * beta)
    grad_v = grad_h.masked_fill_(h != stretched, 0.0).mul_(sig.mul_(1.0 - sig)).mul_(ZETA - GAMMA)
    return SoftRoundingLoss(reconstruction, regulariser, grad_v)
