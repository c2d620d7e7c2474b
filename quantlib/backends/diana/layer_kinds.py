"""DIANA's hardware layers, one kind per row (docs/diana-numerics.md; the way HTVM's pattern table keeps pattern and
check together): the integer op that is the layer (ended by one requantisation, but a max pool), what its report row
shows, the rules its mapped numbers must keep, what upstream DORY does not compute as the chip would, and how the DORY
file writes it. ``hardware_layers(gm, DIANA_LAYER_KINDS)`` splits a graph by it; the report and the export read it."""

from __future__ import annotations

from torch import nn

from quantlib.backends.diana.dory_export import (
    emit_add,
    emit_analog_conv,
    emit_average_pool,
    emit_conv,
    emit_linear,
    emit_max_pool,
)
from quantlib.backends.diana.dory_limits import add_limits, analog_limits, digital_limits, pool_limits
from quantlib.backends.diana.hardware_layers import HardwareLayer, LayerKind, scale_exponent
from quantlib.backends.diana.hardware_rules import (
    Finding,
    adc_findings,
    add_input_findings,
    affine_findings,
    multiplier_findings,
    shift_findings,
)
from quantlib.backends.diana.true_analog_conv import TrueAnalogConv2d
from quantlib.modules.add import Add
from quantlib.modules.true_quant import Requant, TrueAvgPool2d, TrueConv2d, TrueLinear


def _digital_weights(op: nn.Module, fake_op: nn.Module | None) -> dict:
    return {"bits": {"weights": 8}, "scales": {"weights": scale_exponent(op.eps_w)}}


def _analog_weights(op: TrueAnalogConv2d, fake_op: nn.Module | None) -> dict:
    """Ternary weights (their scale is the fake layer's: the integer op folds it away) and the 6-bit ADC."""
    return {"bits": {"weights": 2, "adc": 6}, "requant": {"adc_shift": op.adc_shift},
            "scales": {"weights": scale_exponent(fake_op.scale), "adc": scale_exponent(op.eps_out)}}


def _no_multiplier(layer: HardwareLayer, op: nn.Module, rq: Requant, modules: dict) -> list[Finding]:
    return multiplier_findings(layer.name, layer.kind.name, rq.mul)


def _analog_rules(layer: HardwareLayer, op: TrueAnalogConv2d, rq: Requant, modules: dict) -> list[Finding]:
    return [*shift_findings(layer.name, op.adc_shift), *adc_findings(layer.name, op.adc_mul),
            *affine_findings(layer.name, rq.mul)]


def _add_rules(layer: HardwareLayer, op: Add, rq: Requant, modules: dict) -> list[Finding]:
    left = [(i, modules[n.target]) for i, n in enumerate(layer.input_requants) if n is not None]
    return [*multiplier_findings(layer.name, layer.kind.name, rq.mul), *add_input_findings(layer.name, left)]


DIANA_LAYER_KINDS = (
    LayerKind("conv", TrueConv2d, emit_conv, _digital_weights, _no_multiplier, digital_limits),
    LayerKind("analog_conv", TrueAnalogConv2d, emit_analog_conv, _analog_weights, _analog_rules, analog_limits),
    LayerKind("linear", TrueLinear, emit_linear, _digital_weights, _no_multiplier, digital_limits),
    LayerKind("pool", TrueAvgPool2d, emit_average_pool, dory_limits=pool_limits),
    LayerKind("add", Add, emit_add, checks=_add_rules, dory_limits=add_limits, owns_input_requants=True),
    LayerKind("maxpool", nn.MaxPool2d, emit_max_pool, dory_limits=pool_limits, requantised=False),
)
"""Every kind of layer DIANA runs (conv, analog conv and linear: after the requantisation's shift and clip; pools;
residual adds of two equally scaled inputs; max pools, which keep their input's integers)."""
