"""Analog layers on the way to integers: the scale rules of analog convolutions and their BatchNorms, the editors that
make them a TrueAnalogConv2d and fold the BatchNorm's affine into the next requantisation, their standard-ONNX form
(the ADC written out per tile)."""

from __future__ import annotations

import numpy as np
import torch
import torch.fx as fx

from quantlib.backends.diana.analog_batchnorm import AnalogBatchNorm
from quantlib.backends.diana.analog_conv import AnalogConv2d
from quantlib.backends.diana.true_analog_conv import ADC_HI, ADC_LO, TrueAnalogConv2d
from quantlib.backends.onnx.integer_export import (
    DOUBLE,
    EMITTERS,
    INT64,
    OnnxGraphBuilder,
    conv_integer,
    eight_bit_input,
)
from quantlib.editors.base import ApplicationPoint, Applier, RewriteRule
from quantlib.editors.fake2true.linear_op_integeriser import integer_weights
from quantlib.editors.fake2true.requant_parameters import requant_mul_shift
from quantlib.editors.fake2true.scale_propagation import MODULE_RULES
from quantlib.editors.patterns import ModuleCallFinder
from quantlib.errors import UnsupportedOpError
from quantlib.modules.true_quant import Requant


def _analog_scale(node: fx.Node, m: AnalogConv2d, inputs: list) -> torch.Tensor:
    if inputs[0] is None or inputs[0].numel() != 1:
        raise UnsupportedOpError(f"Analog layer '{node.name}' must read one quantised tensor with a single scale.")
    return m.adc.scale.detach().double()


def _analog_batchnorm_scale(node: fx.Node, m: AnalogBatchNorm, inputs: list) -> torch.Tensor:
    if not m.is_mapped:
        return None  # a float BatchNorm: real values, which the next quantiser puts back on a grid
    if inputs[0] is None or inputs[0].numel() != 1 or float(inputs[0]) != float(m.input_scale):
        raise UnsupportedOpError(f"Analog BatchNorm '{node.name}' was mapped for input scale {float(m.input_scale)} "
                                 f"but reads scale {inputs[0]}; its scales changed after clip_scales_pow2().")
    return torch.tensor(2.0 ** -m.integer_affine()[2], dtype=torch.float64)


DIANA_SCALE_RULES = {**MODULE_RULES, AnalogConv2d: _analog_scale, AnalogBatchNorm: _analog_batchnorm_scale}
"""The generic scale rules and those of DIANA's analog layers."""


class TrueAnalogConvApplier(Applier):
    """Ternary integer weights; the ADC's division becomes ``mul / 2**shift`` of the integer partial sums."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["conv"]
        m: AnalogConv2d = gm.get_submodule(node.target)
        eps_in = node.args[0].meta["scale"]
        weight, eps_w = integer_weights(m)
        if bool((eps_w != eps_w[0]).any()):
            raise UnsupportedOpError(f"Analog layer '{m.qualname}' has one weight scale per channel; the analog "
                                     f"array takes one per layer.")
        eps_adc = m.adc.scale.detach().double().reshape(())
        mul, shift = requant_mul_shift(eps_in * eps_w[0] / eps_adc)
        bias = None if m.bias is None else torch.round(m.bias.detach().double() / eps_adc)
        gm.add_submodule(node.target, TrueAnalogConv2d(weight, bias, m.tiles(), mul, shift, eps_in, eps_adc,
                                                       m.stride, m.padding))


ANALOG_CONV_INTEGERISER = RewriteRule("AnalogConvIntegeriser", ModuleCallFinder((AnalogConv2d,), "conv"),
                                      TrueAnalogConvApplier())
"""Every AnalogConv2d becomes a TrueAnalogConv2d."""


class AffineIntoRequantApplier(Applier):
    """``Requant(bn(acc))`` becomes one Requant of ``acc`` with ``mul' = mul_bn * mul`` and
    ``add' = add_bn * mul + add``: DIANA's Mul -> Add -> Div after the ADC."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["bn"]
        readers = list(node.users)
        requant = gm.get_submodule(readers[0].target) if len(readers) == 1 and readers[0].op == "call_module" \
            else None
        if not isinstance(requant, Requant):
            raise UnsupportedOpError(f"Analog BatchNorm '{node.name}' must be read by one requantisation only, got "
                                     f"{[r.name for r in readers]}.")
        bn: AnalogBatchNorm = gm.get_submodule(node.target)
        mul, add, _ = bn.integer_affine()
        shape = (1, -1, 1, 1)
        requant.add = requant.add + add.reshape(shape) * requant.mul
        requant.mul = mul.reshape(shape) * requant.mul
        requant.eps_in = bn.input_scale.double().reshape(()).clone()
        node.replace_all_uses_with(node.args[0])
        gm.graph.erase_node(node)


ANALOG_BATCHNORM_FOLDER = RewriteRule("AnalogBatchNormFolder", ModuleCallFinder((AnalogBatchNorm,), "bn"),
                                      AffineIntoRequantApplier())
"""No AnalogBatchNorm is left: each one's integer affine is in the requantisation that reads it."""


def _emit_analog(b: OnnxGraphBuilder, node: fx.Node, m: TrueAnalogConv2d, inputs: list[str]) -> str:
    """Per tile: Slice -> ConvInteger -> Cast -> (Mul) -> Div(2^shift) -> Floor -> Clip(-32, 31); tiles added."""
    name = node.name
    x = eight_bit_input(b, inputs[0], node)
    weight = m.weight.detach().numpy()
    total = None
    for i, (start, stop) in enumerate(m.tiles):
        tag = f"{name}.tile{i}"
        sliced = b.op("Slice", [x, b.const(f"{tag}.starts", [start], INT64), b.const(f"{tag}.ends", [stop], INT64),
                                b.const(f"{tag}.axes", [1], INT64)], f"{tag}.in", b.types[x])
        acc = conv_integer(b, sliced, weight[:, start:stop], f"{tag}.acc", m.stride, m.padding)
        y = b.cast(acc, DOUBLE, f"{tag}.double")
        if not bool((m.adc_mul == 1).all()):
            y = b.op("Mul", [y, b.const(f"{tag}.mul", m.adc_mul.numpy(), DOUBLE)], f"{tag}.scaled", DOUBLE)
        y = b.op("Div", [y, b.const(f"{tag}.div", 2.0 ** m.adc_shift, DOUBLE)], f"{tag}.divided", DOUBLE)
        y = b.op("Floor", [y], f"{tag}.floor", DOUBLE)
        y = b.op("Clip", [y, b.const(f"{tag}.lo", ADC_LO, DOUBLE), b.const(f"{tag}.hi", ADC_HI, DOUBLE)],
                 f"{tag}.adc", DOUBLE)
        total = y if total is None else b.op("Add", [total, y], f"{tag}.sum", DOUBLE)
    if m.bias is None:
        return b.op("Identity", [total], name, DOUBLE)
    bias = b.const(f"{name}.bias", m.bias.numpy().reshape(-1, 1, 1).astype(np.float64), DOUBLE)
    return b.op("Add", [total, bias], name, DOUBLE)


DIANA_EMITTERS = {**EMITTERS, TrueAnalogConv2d: _emit_analog}
"""The generic ONNX emitters and the analog layer's."""
