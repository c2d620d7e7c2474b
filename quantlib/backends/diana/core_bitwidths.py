"""``map_scales``' edit: every layer moves to the bit-widths of its core. ReLUs output 7-bit unsigned integers (their
clipping bound kept, so their scale doubles); analog layers get ternary weights and a 6-bit ADC per tile.

DIANA's ReLU clips at the top of its 7-bit range only, so a ReLU6 loses its ceiling here: its calibrated clipping
bound (observed on values already clamped at 6) takes the ceiling's place."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

import torch
import torch.fx as fx

from quantlib.backends.diana.analog_conv import AnalogConv2d
from quantlib.modules.qactivations import QReLU
from quantlib.modules.qlinear import QConv2d
from quantlib.scale_ties import source_quantiser
from quantlib.specs import QRange

RELU_RANGE = QRange.from_spec({"bitwidth": 7, "signed": False})


def to_core_bitwidths(gm: fx.GraphModule, analog_layers: Collection[str]) -> list[AnalogConv2d]:
    """Edit ``gm`` in place: 7-bit ReLUs, and an AnalogConv2d (uncalibrated) for every layer in ``analog_layers``,
    which must be QConv2d modules and keep their weight, bias and clip Parameters (only the ADCs' are new); returns
    the new analog convolutions."""
    for module in gm.modules():
        if isinstance(module, QReLU):
            module.spec = dataclasses.replace(module.spec, qrange=RELU_RANGE)
            module.ceiling = None
    analog = []
    for name in analog_layers:
        conv = gm.get_submodule(name)
        if type(conv) is not QConv2d:
            raise TypeError(f"Layer '{name}' is a {type(conv).__name__}, not a QConv2d: only digital convolutions "
                            f"move to the analog core.")
        new = AnalogConv2d.from_fp_module(conv, name=name)
        new.is_quantised = False
        new.weight, new.clip_hi = conv.weight, conv.clip_hi  # the same Parameters: optimisers keep training them
        if conv.bias is not None:
            new.bias = conv.bias
        gm.add_submodule(name, new)
        analog.append(new)
    gm.recompile()
    return analog


def init_ternary_weights(convs: Collection[AnalogConv2d]) -> None:
    """Initialise each analog layer's ternary weight scale from its weights (no data needed)."""
    for conv in convs:
        conv.start_observing()
        conv.quantise(conv.weight.detach())
        conv.stop_observing()
        conv.init_qhparams()


def clamp_adc_scales(gm: fx.GraphModule) -> None:
    """No ADC scale finer than its layer's input scale x weight scale: every partial sum is a multiple of that
    product, so a finer ADC grid resolves nothing more, and the ADC would have to multiply (it can only shift)."""
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        conv = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(conv, AnalogConv2d) or not (conv.is_quantised and conv.adc.is_quantised):
            continue
        source = source_quantiser(node.args[0], modules)
        if source is None:
            continue
        grid = (source.scale.detach().amax() * conv.scale.detach().amax()).reshape(())
        if bool(conv.adc.scale.detach().amax() < grid):
            with torch.no_grad():
                conv.adc.set_scale(grid.expand_as(conv.adc.scale.detach()).clone())
