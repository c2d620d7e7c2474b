"""Bias correction (Nagel et al. 2019, empirical form; Banner et al. 2019): quantised weights shift each output
channel's expected value by ``E[(W_q - W) x]``; measured on the calibration data layer by layer (each layer's input
taken from the already corrected model) and subtracted from the bias (a bias is added where the layer has none)."""

from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.ptq.capture import FLOAT_PARAMETERS, capture
from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.scope import Scope


def linear_op(module: QConv2d | QLinear, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The layer's op on ``x`` with ``weight`` and no bias."""
    if isinstance(module, QConv2d):
        return module._conv_forward(x, weight, None)
    return F.linear(x, weight)


def channel_mean(y: torch.Tensor) -> torch.Tensor:
    """The mean of each output channel (dimension 1) over every other dimension."""
    return y.transpose(0, 1).reshape(y.shape[1], -1).mean(dim=1)


def output_shift(module: QConv2d | QLinear, x: torch.Tensor, float_weight: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """``E[(W_q - W) x]`` per output channel on inputs ``x``; ``W``: ``float_weight`` (default: the weights)."""
    with torch.no_grad():
        error = module.quantise(module.weight) - (module.weight if float_weight is None else float_weight)
        return channel_mean(linear_op(module, x, error))


def correct_bias(module: QConv2d | QLinear, x: torch.Tensor, float_weight: torch.Tensor | None = None
                 ) -> torch.Tensor:
    """Subtract the layer's measured output shift on ``x`` (against ``float_weight``, default: its weights) from its
    bias; returns the shift."""
    shift = output_shift(module, x, float_weight)
    with torch.no_grad():
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros_like(shift))
        module.bias -= shift
    return shift


class BiasCorrection(PTQMethod):
    """Round to nearest, then every layer's bias corrected for the mean shift its quantised weights cause."""

    name = "bias_correction"

    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        floats = gm.meta.get(FLOAT_PARAMETERS, {})  # a method before may have changed the weights (ACIQ clips them)
        for layer in scope.layers:
            x, _ = capture(gm, [layer.module], batches)[layer.module]
            correct_bias(layer.module, x, floats[layer.name][0] if layer.name in floats else None)
