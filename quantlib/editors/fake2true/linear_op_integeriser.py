"""Quantised Conv2d / Linear become true-quantised ones: integer weights (the fake-quantised weights divided by their
scale), the bias rounded onto the accumulator's grid (input scale x weight scale), and the scales kept alongside."""

from __future__ import annotations

import torch
import torch.fx as fx

from quantlib.editors.base import ApplicationPoint, Applier, RewriteRule
from quantlib.editors.patterns import ModuleCallFinder
from quantlib.errors import UnsupportedOpError
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.true_quant import TrueConv2d, TrueLinear

INT32_MAX = 2 ** 31 - 1


def integer_weights(m: QConv2d | QLinear) -> tuple[torch.Tensor, torch.Tensor]:
    """(integer weights, per-output-channel weight scale) of a quantised linear op."""
    if not m.is_quantised:
        raise UnsupportedOpError(f"Layer '{m.qualname}' is not quantised yet: calibrate the model first.")
    with torch.no_grad():
        eps_w = m.scale.detach().double().reshape(-1).expand(m.weight.shape[0]).clone()
        fake = m.call_op(m.weight.detach()).double()
        integers = torch.round(fake / eps_w.reshape(-1, *([1] * (fake.dim() - 1))))
    return integers, eps_w


class TrueLinearOpApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["linear"]
        m = gm.get_submodule(node.target)
        if isinstance(m, QConv2d) and m.padding_mode != "zeros":
            raise UnsupportedOpError(f"Layer '{m.qualname}' pads with '{m.padding_mode}'; integer convolutions pad "
                                     f"with zeros: use padding_mode='zeros'.")
        eps_in = node.args[0].meta["scale"]
        weight, eps_w = integer_weights(m)
        bias = None
        if m.bias is not None:
            bias = torch.round(m.bias.detach().double() / (eps_in * eps_w))
            if bool((bias.abs() > INT32_MAX).any()):
                raise UnsupportedOpError(f"Layer '{m.qualname}': its bias does not fit in int32 on the accumulator "
                                         f"grid (scale {float(eps_in * eps_w.min()):.3g}); the input or weight scales "
                                         f"are too fine for the bias.")
        if isinstance(m, QConv2d):
            true = TrueConv2d(weight, bias, eps_w, eps_in, m.stride, m.padding, m.dilation, m.groups)
        else:
            true = TrueLinear(weight, bias, eps_w, eps_in)
        gm.add_submodule(node.target, true)


LINEAR_OP_INTEGERISER = RewriteRule("LinearOpIntegeriser", ModuleCallFinder((QConv2d, QLinear), "linear", exact=True),
                                    TrueLinearOpApplier())
