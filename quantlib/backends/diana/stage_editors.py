"""The edits of DIANA's stages that are DIANA's own, as editors run in place on a DianaModule's graph: layers to
their cores' bit-widths, ADC scales no finer than their sums' grid, analog BatchNorms mapped to the chip's affine."""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.fx as fx

from quantlib.backends.diana.analog_batchnorm import AnalogBatchNorm
from quantlib.backends.diana.analog_conv import AnalogConv2d
from quantlib.backends.diana.core_bitwidths import (
    RELU_RANGE,
    clamp_adc_scales,
    init_ternary_weights,
    to_core_bitwidths,
)
from quantlib.editors.base import Editor
from quantlib.editors.fake2true.scale_propagation import ModuleRule, ScalePropagator
from quantlib.errors import EditorError
from quantlib.graphs.tracing import ensure_shapes
from quantlib.modules.qactivations import QReLU


class CoreBitwidths(Editor):
    """7-bit ReLUs; every layer of ``analog`` an AnalogConv2d with ternary weights initialised from its weights (its
    weight, bias and clip Parameters kept) and an uncalibrated 6-bit ADC."""

    def __init__(self, analog: Collection[str]) -> None:
        self.analog = list(analog)

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        init_ternary_weights(to_core_bitwidths(gm, self.analog))
        return gm

    def ensures(self, gm: fx.GraphModule) -> None:
        wrong = [n for n in self.analog if not isinstance(gm.get_submodule(n), AnalogConv2d)]
        wrong += [m.qualname for m in gm.modules() if isinstance(m, QReLU) and m.spec.qrange != RELU_RANGE]
        if wrong:
            raise EditorError(f"CoreBitwidths left {wrong} off their core's bit-widths.")


def adc_quantisers(gm: fx.GraphModule) -> list:
    """The ADC quantiser of every analog layer of ``gm``."""
    return [m.adc for m in gm.modules() if isinstance(m, AnalogConv2d)]


class ClampAdcScales(Editor):
    """No ADC scale finer than its layer's input scale x weight scale (``clamp_adc_scales``)."""

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        clamp_adc_scales(gm)
        return gm


class MapAnalogBatchNorms(Editor):
    """Every analog BatchNorm takes the scale of its input (the ADC sum's, by ``scale_rules`` on the shapes of
    ``example_input``): from now on it computes the chip's integer affine."""

    def __init__(self, example_input: torch.Tensor, scale_rules: dict[type, ModuleRule]) -> None:
        self.example_input, self.scale_rules = example_input, scale_rules

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        if not any(isinstance(m, AnalogBatchNorm) and not m.is_mapped for m in gm.modules()):
            return gm
        ensure_shapes(gm, self.example_input)
        ScalePropagator(self.scale_rules).annotate(gm)
        for node in gm.graph.nodes:
            module = gm.get_submodule(node.target) if node.op == "call_module" else None
            if isinstance(module, AnalogBatchNorm) and not module.is_mapped:
                module.input_scale = node.args[0].meta["scale"].detach().float().reshape(()).clone()
        return gm

    def ensures(self, gm: fx.GraphModule) -> None:
        left = [n for n, m in gm.named_modules() if isinstance(m, AnalogBatchNorm) and not m.is_mapped]
        if left:
            raise EditorError(f"Analog BatchNorms {left} have no input scale after MapAnalogBatchNorms.")
