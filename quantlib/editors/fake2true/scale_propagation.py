"""Scale (epsilon) propagation: every node of a fake-quantised graph gets ``node.meta['scale']``.

A node's scale is the real value of one integer unit of the tensor it computes (a 0-d tensor, or one per channel that
broadcasts against the tensor), or None where values are not on any grid (float inputs before their quantiser). Each
op the canonical graph can hold has a rule below; an op without a rule that reads quantised values raises
UnsupportedOpError naming the node: a scale is never guessed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import Annotator
from quantlib.errors import UnsupportedOpError
from quantlib.graphs.value_preserving import RESHAPE_METHODS
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.concat import Concat
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.true_quant import ScaleTunnel, TrueAvgPool2d, TrueQuantModule

Scale = torch.Tensor | None
ModuleRule = Callable[[fx.Node, nn.Module, list[Scale]], Scale]

TIED_SCALE_TOLERANCE = 1e-6
"""Relative difference up to which two tied scales are one: a grid with a learned zero point holds its scale as
``(clip_hi - clip_lo) / (n - 1)``, which float32 leaves an ulp or two from the scale it was tied to."""


def scales_tied(scales: list[torch.Tensor]) -> bool:
    """Whether ``scales`` (same shapes) are one scale, to ``TIED_SCALE_TOLERANCE``."""
    first = scales[0].double()
    return all(s.shape == first.shape and bool(((s.double() - first).abs() <= TIED_SCALE_TOLERANCE * first).all())
               for s in scales[1:])


def _own_scale(node: fx.Node, m: nn.Module, inputs: list[Scale]) -> Scale:
    return m.get_output_scale(inputs).double()


def _linear(node: fx.Node, m: QConv2d | QLinear, inputs: list[Scale]) -> Scale:
    if inputs[0] is None:
        raise UnsupportedOpError(f"Node '{node.name}' ({type(m).__name__}) reads values that no quantiser put on a "
                                 f"grid; insert an activation quantiser before it (the Interposer does).")
    if inputs[0].numel() > 1:
        raise UnsupportedOpError(f"Node '{node.name}' ({type(m).__name__}) reads a tensor with one scale per channel; "
                                 f"integer linear ops need one input scale: requantise it first.")
    return m.get_output_scale(inputs).double()


def _same_as_input(node: fx.Node, m: nn.Module | None, inputs: list[Scale]) -> Scale:
    return inputs[0]


def _flatten(node: fx.Node, m: nn.Module | None, inputs: list[Scale]) -> Scale:
    if inputs[0] is not None and inputs[0].numel() > 1:
        raise UnsupportedOpError(f"Node '{node.name}' flattens a tensor with one scale per channel; requantise it to "
                                 f"a single scale first.")
    return inputs[0]


def _one_scale(node: fx.Node, m: nn.Module, inputs: list[Scale]) -> Scale:
    if all(s is None for s in inputs):
        return None
    if any(s is None for s in inputs) or not scales_tied(inputs):
        raise UnsupportedOpError(f"Node '{node.name}' ({type(m).__name__}) joins tensors of different scales "
                                 f"{[None if s is None else s.tolist() for s in inputs]}; calibrate ties the scales of "
                                 f"a concatenation's inputs (quantlib.scale_ties): quantise every input.")
    return inputs[0]


def _uneven_average(node: fx.Node, m: nn.Module, inputs: list[Scale]) -> Scale:
    if inputs[0] is None:
        return None
    raise UnsupportedOpError(f"Node '{node.name}' ({type(m).__name__}) divides its windows by different counts "
                             f"(ceil_mode, padding left out of the count, a divisor override, or windows of "
                             f"different sizes); integer hardware divides every window by kh * kw: use "
                             f"ceil_mode=False, count_include_pad=True, no divisor_override, and an output size that "
                             f"divides the input size.")


MODULE_RULES: dict[type[nn.Module], ModuleRule] = {
    QIdentity: _own_scale,
    QReLU: _own_scale,
    QHarmonisedAdd: _own_scale,
    QConv2d: _linear,
    QLinear: _linear,
    nn.ReLU: _same_as_input,
    nn.MaxPool2d: _same_as_input,
    nn.Flatten: _flatten,
    AveragePool2d: _same_as_input,  # the mean floored on its input's grid
    Concat: _one_scale,
    nn.AvgPool2d: _uneven_average,  # canonicalisation converts every other average pool
    nn.AdaptiveAvgPool2d: _uneven_average,
    ScaleTunnel: lambda node, m, inputs: None if inputs[0] is None else inputs[0] * m.factor,
    TrueAvgPool2d: _same_as_input,
}
"""The scale rule of every module type the generic canonical (fake- or true-quantised) graph can hold; true-quantised
modules (Requant, TrueConv2d, ...) state their output scale themselves. A target passes these rules with its own
modules' added (``quantlib.targets.Target.scale_rules``)."""

METHOD_RULES: dict[str, ModuleRule] = {method: _flatten for method in RESHAPE_METHODS}
"""Reshaping methods keep their input's scale, if it is one per tensor."""


def normalise_scale(scale: torch.Tensor) -> torch.Tensor:
    """A float64 scale: 0-d when it is one number, else as given (one per channel, broadcastable)."""
    scale = scale.detach().double()
    return scale.reshape(()) if scale.numel() == 1 else scale


class ScalePropagator(Annotator):
    """Writes ``node.meta['scale']`` on every node, in topological order, by the scale ``rules`` of module types."""

    def __init__(self, rules: Mapping[type[nn.Module], ModuleRule] = MODULE_RULES) -> None:
        self.rules = rules

    def annotate(self, gm: fx.GraphModule) -> None:
        modules = dict(gm.named_modules())
        for node in gm.graph.nodes:
            inputs = [a.meta.get("scale") for a in node.all_input_nodes]
            scale = self._scale(node, modules, inputs)
            node.meta["scale"] = None if scale is None else normalise_scale(scale)

    def _scale(self, node: fx.Node, modules: dict[str, nn.Module], inputs: list[Scale]) -> Scale:
        if node.op in ("placeholder", "get_attr"):
            return None
        if node.op == "output":
            return inputs[0] if inputs else None
        module = modules.get(node.target) if node.op == "call_module" else None
        rule = None
        if isinstance(module, TrueQuantModule):
            return module.output_scale()
        if module is not None:
            rule = self.rules.get(type(module))
        elif node.op == "call_method":
            rule = METHOD_RULES.get(node.target)
        if rule is not None:
            return rule(node, module, inputs)
        if all(s is None for s in inputs):
            return None  # float computations before the quantised region need no scale
        target = getattr(node.target, "__name__", node.target)
        what = type(module).__name__ if module is not None else f"{node.op} {target}"
        raise UnsupportedOpError(f"Node '{node.name}' ({what}) reads quantised values but the target has no scale rule "
                                 f"for it. Replace it by a supported op, keep it outside the quantised region, or add "
                                 f"a rule to the target's scale_rules.")
