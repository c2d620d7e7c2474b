"""Switchable-precision layers: each holds a tuple of bit-width options and a current one (``bits``); 32 is full
precision (the layer computes as the float one).

- ``SwitchableConv1d`` / ``SwitchableConv2d`` / ``SwitchableLinear``: the weights quantised by DoReFa (``tanh``
  normalisation; sign times mean |w| at 1 bit) or LSQ (a learned step on the signed grid ``[-2^(k-1), 2^(k-1) - 1]``;
  ``+-step`` at 1 bit), optionally rescaled as SAT does.
- ``SwitchableActivation`` (in place of a ReLU): ReLU, then DoReFa's ``quantize_k(clamp(x, 0, 1))``, PACT's
  ``alpha * quantize_k(clamp(x, 0, alpha) / alpha)`` with a learned clip ``alpha`` (gradient 1 where x > alpha; one
  per bit-width with ``switchable_clipping``), or LSQ's learned step on ``[0, 2^k - 1]``.
- ``SwitchableResidual``: a signed LSQ quantiser for a tensor that is not a ReLU's output (a residual sum).
- LSQ steps are one per bit-width, 0 until the first tensor a layer quantises at that width sets them to LSQ's
  ``2 mean|x| / sqrt(q_p)`` (rank 0's value under torch.distributed), with LSQ's gradient scale
  ``1 / sqrt(n q_p)`` (n: the weight's size, or an activation's size per sample).
- ``SwitchableBatchNorm``: one set of statistics and affine parameters per bit-width of the layer it reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from quantlib import distributed
from quantlib.quantizers import (
    dorefa_activations,
    dorefa_weights,
    lsq_grad_scale,
    lsq_initial_step,
    lsq_quantize,
    lsq_signed,
)

FULL_PRECISION = 32
WEIGHT_QUANTISERS = ("dorefa", "lsq")
ACTIVATION_QUANTISERS = ("dorefa", "pact", "lsq")
PACT_INITIAL_CLIP = 6.0
"""PACT's initial alpha (Choi et al. 2018 start at 10; 6 is ReLU6's clip, which suits BatchNorm-ed activations)."""


def check_options(options: Sequence[int], where: str) -> tuple[int, ...]:
    """The bit-width options as a sorted tuple, each 1..16 or 32 (ValueError naming ``where`` otherwise)."""
    values = tuple(sorted(set(options)))
    bad = [k for k in values if not (isinstance(k, int) and not isinstance(k, bool) and (1 <= k <= 16 or k == 32))]
    if not values or bad:
        raise ValueError(f"{where}: bit-width options {list(options)} must be a non-empty list of integers from 1 to "
                         f"16 or 32 (full precision); not allowed: {bad}.")
    return values


class Switchable(nn.Module):
    """What every switchable layer shares: ``options`` and the current ``bits``."""

    options: tuple[int, ...]
    bits: int

    def init_switchable(self, options: Sequence[int]) -> None:
        self.options = check_options(options, type(self).__name__)
        self.bits = self.options[-1]

    def set_bits(self, bits: int) -> None:
        """Compute at ``bits`` from now on (one of ``options``)."""
        if bits not in self.options:
            raise ValueError(f"{type(self).__name__}: {bits} bits is not one of its options {list(self.options)}.")
        self.bits = bits

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, options={list(self.options)}, bits={self.bits}"


class LearnedSteps(Switchable):
    """LSQ's learned step per bit-width option (the module doc)."""

    steps: nn.ParameterDict
    steps_checked: set[str]
    """The bit-widths whose step is known to be set: each is read from the device once, not in every forward."""

    def init_steps(self) -> None:
        self.steps = nn.ParameterDict({str(k): nn.Parameter(torch.tensor(0.0)) for k in self.options
                                       if k != FULL_PRECISION})
        self.steps_checked = set()

    def learned_step(self, x: torch.Tensor, q_p: int) -> torch.Tensor:
        """The step of the current bit-width, set from ``x`` if it is still 0."""
        key = str(self.bits)
        step = self.steps[key]
        if key not in self.steps_checked:
            if not step.detach() > 0:
                with torch.no_grad():
                    step.copy_(lsq_initial_step(x, q_p))
                distributed.broadcast_from_main([step], distributed.current())
            self.steps_checked.add(key)
        return step

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.steps_checked = set()  # loaded steps may be unset ones
        super()._load_from_state_dict(*args, **kwargs)


def signed_levels(bits: int) -> int:
    """q_p of the signed LSQ grid at ``bits`` (1 at 1 bit: ``+-step``)."""
    return max(2 ** (bits - 1) - 1, 1)


def sat_rescale(w_q: torch.Tensor, fan_out: int) -> torch.Tensor:
    """SAT's weight rescaling (Jin et al. 2020): ``w_q / std(w_q)`` scaled to standard deviation ``1 / sqrt(fan_out)``
    (the factor is detached), so that every bit-width feeds the next layer a variance like a float layer's."""
    return w_q * (1.0 / math.sqrt(fan_out) / w_q.detach().std().clamp_min(1e-12))


class SwitchableWeights(LearnedSteps):
    """The weight quantisation of the switchable linear ops."""

    weight: nn.Parameter
    weight_quantiser: str
    sat_weight_normalization: bool

    def quantised_weight(self) -> torch.Tensor:
        if self.bits == FULL_PRECISION:
            return self.weight
        if self.weight_quantiser == "lsq":
            q_p = signed_levels(self.bits)
            step = self.learned_step(self.weight, q_p)
            w_q = lsq_signed(self.weight, step, self.bits, lsq_grad_scale(self.weight.numel(), q_p))
        else:
            w_q = dorefa_weights(self.weight, self.bits)
        if self.sat_weight_normalization:
            w_q = sat_rescale(w_q, self.weight.shape[0] * math.prod(self.weight.shape[2:]))
        return w_q

    def integer_weights(self) -> tuple[int, torch.Tensor]:
        """The signed bits the current weights' integer levels need, and the largest level per output channel
        (DoReFa: odd levels up to 2^k - 1, k + 1 bits; LSQ: k bits, 2 at 1 bit)."""
        w = self.weight.detach()
        if self.weight_quantiser == "lsq":
            step, bits = self.learned_step(w, signed_levels(self.bits)).detach(), max(self.bits, 2)
            unscaled = lsq_signed(w, step, self.bits, 1.0) / step
        else:
            unscaled, bits = dorefa_weights(w, self.bits), self.bits + 1
            unscaled = unscaled / (unscaled.abs().mean() if self.bits == 1 else 1.0 / (2 ** self.bits - 1))
        return bits, torch.round(unscaled.abs().flatten(1).amax(dim=1))


class SwitchableConv1d(SwitchableWeights, nn.Conv1d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantised_weight(), self.bias)


class SwitchableConv2d(SwitchableWeights, nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantised_weight(), self.bias)


class SwitchableLinear(SwitchableWeights, nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantised_weight(), self.bias)


SWITCHABLE_OF = {nn.Conv1d: SwitchableConv1d, nn.Conv2d: SwitchableConv2d, nn.Linear: SwitchableLinear}


def switchable_linear_op(layer: nn.Conv1d | nn.Conv2d | nn.Linear, options: Sequence[int],
                         sat_weight_normalization: bool = False, weight_quantiser: str = "dorefa") -> SwitchableWeights:
    """The switchable twin of ``layer`` with its weights and bias (copies), at its highest option."""
    cls = SWITCHABLE_OF[type(layer)]
    twin = cls.__new__(cls)
    nn.Module.__init__(twin)
    twin.__dict__.update({k: v for k, v in layer.__dict__.items()
                          if k not in ("_parameters", "_buffers", "_modules")})
    for name, p in layer._parameters.items():  # bias may be None
        twin.register_parameter(name, None if p is None else nn.Parameter(p.detach().clone(), p.requires_grad))
    twin.init_switchable(options)
    twin.init_steps()
    twin.weight_quantiser = weight_quantiser
    twin.sat_weight_normalization = sat_weight_normalization
    return twin


class SwitchableActivation(LearnedSteps):
    """ReLU, then the activation quantiser at the current bit-width (32: ReLU alone)."""

    def __init__(self, options: Sequence[int], quantiser: str = "dorefa", switchable_clipping: bool = False) -> None:
        super().__init__()
        if quantiser not in ACTIVATION_QUANTISERS:
            raise ValueError(f"SwitchableActivation: activation quantiser {quantiser!r} is not one of "
                             f"{list(ACTIVATION_QUANTISERS)}.")
        self.init_switchable(options)
        self.quantiser = quantiser
        self.switchable_clipping = switchable_clipping
        if quantiser == "pact":
            keys = [str(k) for k in self.options] if switchable_clipping else ["shared"]
            self.clips = nn.ParameterDict({k: nn.Parameter(torch.tensor(PACT_INITIAL_CLIP)) for k in keys})
        if quantiser == "lsq":
            self.init_steps()

    def clip(self) -> torch.Tensor:
        """PACT's alpha for the current bit-width."""
        return self.clips[str(self.bits) if self.switchable_clipping else "shared"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        if self.bits == FULL_PRECISION:
            return x
        if self.quantiser == "dorefa":
            return dorefa_activations(x, self.bits)
        n = 2 ** self.bits - 1
        if self.quantiser == "lsq":
            return lsq_quantize(x, self.learned_step(x, n), 0, n, lsq_grad_scale(x[0].numel(), n))
        alpha = self.clip()
        clipped = x - F.relu(x - alpha)  # clamp(x, 0, alpha), alpha's gradient 1 where x > alpha (PACT's)
        levels = torch.round(clipped.detach() * n / alpha.detach()) * alpha.detach() / n
        return clipped + (levels - clipped).detach()  # rounding straight through

    def step(self) -> torch.Tensor:
        """The step between the current bit-width's levels (DoReFa: 1 / (2^k - 1); PACT: alpha / (2^k - 1); LSQ:
        its learned step, which must have been set by a forward)."""
        if self.quantiser == "lsq":
            return self.steps[str(self.bits)].detach()
        top = self.clip().detach() if self.quantiser == "pact" else torch.tensor(1.0)
        return top / (2 ** self.bits - 1)

    def extra_repr(self) -> str:
        return f"quantiser={self.quantiser!r}, options={list(self.options)}, bits={self.bits}"


class SwitchableResidual(LearnedSteps):
    """A signed LSQ quantiser at the current bit-width (32: the identity), for a tensor with no ReLU before it."""

    def __init__(self, options: Sequence[int]) -> None:
        super().__init__()
        self.init_switchable(options)
        self.init_steps()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bits == FULL_PRECISION:
            return x
        q_p = signed_levels(self.bits)
        return lsq_signed(x, self.learned_step(x, q_p), self.bits, lsq_grad_scale(x[0].numel(), q_p))


class SwitchableBatchNorm(nn.Module):
    """BatchNorm with one set of statistics and affine parameters per bit-width of ``source``, the switchable layer
    whose output it normalises (Any-Precision DNNs, AdaBits): a k-bit conv's outputs have their own mean and
    variance."""

    def __init__(self, bn: nn.BatchNorm1d | nn.BatchNorm2d, source: Switchable) -> None:
        super().__init__()
        self._source = [source]  # a plain list: the source is the model's module, not this one's child
        self.norms = nn.ModuleDict({str(k): _copy_batchnorm(bn) for k in source.options})

    @property
    def source(self) -> Switchable:
        return self._source[0]

    def current(self) -> nn.Module:
        """The BatchNorm of the source's current bit-width."""
        return self.norms[str(self.source.bits)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.current()(x)


def _copy_batchnorm(bn: nn.Module) -> nn.Module:
    twin = type(bn)(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
    twin.load_state_dict(bn.state_dict())
    return twin
