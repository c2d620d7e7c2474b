"""Which nodes output values on a quantisation grid, looking through ops that keep the grid (max-pool, flatten)."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.graphs.value_preserving import is_value_preserving
from quantlib.modules.average_pool import AveragePool2d
from quantlib.modules.concat import Concat
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear

QUANTISER_TYPES = (QIdentity, QReLU, QHarmonisedAdd)
"""Modules whose output is fake-quantised."""

GRID_KEEPING_MODULES = (AveragePool2d, Concat)
"""Besides the value-preserving ops (quantlib.graphs.value_preserving), modules whose output lies on the grid of their
(first) input: an average pool floors its mean on that grid, a concatenation's inputs are tied to one scale
(``harmonise_scales``)."""
LAYER_CONTINUING_MODULES = (nn.BatchNorm2d,)
"""Modules that may read a linear op's accumulator directly: they are part of its layer (a BatchNorm kept unfolded is
applied to the accumulator before the requantisation), and their output is off-grid like the accumulator."""
GRID_LEAVING_MODULES = (QConv2d, QLinear, *LAYER_CONTINUING_MODULES)
"""Ops whose outputs lie between the grid points of their inputs: accumulators."""


def is_quantiser(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], QUANTISER_TYPES)


def continues_layer(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], LAYER_CONTINUING_MODULES)


def needs_requantisation(node: fx.Node, modules: dict[str, nn.Module], outputs: bool = False) -> bool:
    """Whether ``node`` leaves the grid and something other than a quantiser (or a module continuing its layer) reads
    it. A linear op's accumulator may be a network output (logits) unless ``outputs``."""
    if node.op != "call_module" or not isinstance(modules[node.target], GRID_LEAVING_MODULES):
        return False
    return any(not is_quantiser(u, modules) and not continues_layer(u, modules) and (outputs or u.op != "output")
               for u in node.users)


def grid_source(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The node whose values ``node`` carries unchanged up to selection and reshaping (itself if it changes them)."""
    while (is_value_preserving(node, modules)
           or node.op == "call_module" and isinstance(modules[node.target], GRID_KEEPING_MODULES)):
        node = node.args[0]
    return node


