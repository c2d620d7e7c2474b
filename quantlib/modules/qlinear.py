"""Quantised linear ops: ``QConv2d`` and ``QLinear`` fake-quantise their weights (inputs are quantised upstream)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.graphs.tracing import leaf_module
from quantlib.modules import qops  # noqa: F401 - registers the built-in qops
from quantlib.modules.qmodule import QModule
from quantlib.specs import QuantiserSpec


def _check_weight_granularity(spec: QuantiserSpec, name: str) -> None:
    if spec.granularity.dims not in ((), (0,)):
        raise ValueError(f"Layer '{name}': weights take one scale per tensor ('per-array') or per output channel "
                         f"('per-outchannel_weights'), not per dimensions {spec.granularity.dims}.")


def with_weights_of(q: nn.Module, module: nn.Module) -> nn.Module:
    """``q`` holding a copy of ``module``'s parameters (frozen ones stay frozen), on its device and in its training
    mode."""
    q.load_state_dict(module.state_dict(), strict=False)
    for name, p in module.named_parameters(recurse=False):
        getattr(q, name).requires_grad_(p.requires_grad)
    return q.to(module.weight.device).train(module.training)


def quantised_bias(module: QConv2d | QLinear) -> torch.Tensor | None:
    """The bias on the accumulator's grid once ``bias_scale`` is set (rounded, straight-through), else as it is.

    Its value is exactly ``round(bias / scale) * scale`` (``bias + (q - bias).detach()`` would round in float32)."""
    bias, scale = module.bias, module.bias_scale
    if bias is None or scale.numel() == 0:
        return bias
    return torch.round(bias / scale).detach() * scale + (bias - bias.detach())


def _output_scale(input_scale: torch.Tensor, weight_scale: torch.Tensor, out_dims: int) -> torch.Tensor:
    """input scale x weight scale in float64 (a 0-d float64 scale times a float32 vector would be float32), shaped
    [1, C, 1, ...] for per-channel weights so it broadcasts over the output."""
    weight_scale = weight_scale.detach().double()
    if weight_scale.numel() > 1:
        weight_scale = weight_scale.reshape(1, -1, *([1] * (out_dims - 2)))
    return input_scale.double() * weight_scale


class _QLinearOp(QModule):
    """What quantised Conv2d and Linear share: weight granularity per tensor or per output channel, and a bias
    that ``quantise_biases`` may put on the accumulator's grid (``bias_scale``; empty: float bias)."""

    RESIZABLE_STATE = (*QModule.RESIZABLE_STATE, "bias_scale")

    def init_linear_quantiser(self, spec: QuantiserSpec, name: str) -> None:
        """``init_quantiser`` for a linear op's weights, plus an unset ``bias_scale``."""
        _check_weight_granularity(spec, name)
        self.init_quantiser(spec, name)
        self.register_buffer("bias_scale", torch.empty(0))


@leaf_module
class QConv2d(_QLinearOp, nn.Conv2d):
    """A Conv2d whose weights are fake-quantised."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", *, spec: QuantiserSpec,
                 name: str = "") -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
                         padding_mode)
        self.init_linear_quantiser(spec, name)

    @classmethod
    def from_fp_module(cls, conv: nn.Conv2d, spec: QuantiserSpec, name: str = "") -> QConv2d:
        """A QConv2d with ``conv``'s hyperparameters and a copy of its weights."""
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, spec=spec, name=name)
        return with_weights_of(q, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantise(self.weight), quantised_bias(self))

    def get_output_scale(self, input_scales: list[torch.Tensor]) -> torch.Tensor:
        """Scale of the accumulator: input scale x weight scale (per output channel)."""
        return _output_scale(input_scales[0], self.scale, 4)


@leaf_module
class QLinear(_QLinearOp, nn.Linear):
    """A Linear whose weights are fake-quantised."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, spec: QuantiserSpec,
                 name: str = "") -> None:
        super().__init__(in_features, out_features, bias)
        self.init_linear_quantiser(spec, name)

    @classmethod
    def from_fp_module(cls, linear: nn.Linear, spec: QuantiserSpec, name: str = "") -> QLinear:
        """A QLinear with ``linear``'s shape and a copy of its weights."""
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, spec=spec, name=name)
        return with_weights_of(q, linear)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantise(self.weight), quantised_bias(self))

    def get_output_scale(self, input_scales: list[torch.Tensor]) -> torch.Tensor:
        """Scale of the accumulator: input scale x weight scale (per output feature)."""
        return _output_scale(input_scales[0], self.scale, 2)
