"""Which nodes output values on a quantisation grid, looking through ops that keep the grid (max-pool, flatten)."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear

QUANTISER_TYPES = (QIdentity, QReLU, QHarmonisedAdd)
"""Modules whose output is fake-quantised."""

GRID_PRESERVING_MODULES = (nn.MaxPool2d, nn.MaxPool1d, nn.Flatten)
GRID_LEAVING_MODULES = (QConv2d, QLinear, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
"""Ops whose outputs lie between the grid points of their inputs: accumulators and averages."""
GRID_PRESERVING_METHODS = ("view", "reshape", "flatten", "contiguous")


def is_quantiser(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], QUANTISER_TYPES)


def leaves_grid(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], GRID_LEAVING_MODULES)


def grid_source(node: fx.Node, modules: dict[str, nn.Module]) -> fx.Node:
    """The node whose values ``node`` carries unchanged up to selection and reshaping (itself if it changes them)."""
    while (node.op == "call_module" and isinstance(modules[node.target], GRID_PRESERVING_MODULES)
           or node.op == "call_method" and node.target in GRID_PRESERVING_METHODS):
        node = node.args[0]
    return node


def is_on_grid(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node``'s values are fake-quantised (by a quantiser, possibly through grid-preserving ops)."""
    return is_quantiser(grid_source(node, modules), modules)
