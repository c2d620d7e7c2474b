"""The one list of value-preserving ops: the ops whose output holds values of their input unchanged, so that a
quantised tensor keeps its integers and its scale through them. Reshapes move values; selections (max pools) pick
some of them. Every editor that looks through such ops asks here."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

RESHAPE_MODULES: tuple[type[nn.Module], ...] = (nn.Flatten,)
RESHAPE_METHODS: tuple[str, ...] = ("view", "reshape", "flatten", "contiguous")
SELECTION_MODULES: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.MaxPool1d)


def is_reshape(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` only moves its input's values (flatten, view, reshape)."""
    return (node.op == "call_module" and isinstance(modules[node.target], RESHAPE_MODULES)
            or node.op == "call_method" and node.target in RESHAPE_METHODS)


def is_selection(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether ``node`` picks some of its input's values (a max pool)."""
    return node.op == "call_module" and isinstance(modules[node.target], SELECTION_MODULES)


def is_value_preserving(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """Whether every value ``node`` outputs is one of its input's, unchanged (a reshape or a selection)."""
    return is_reshape(node, modules) or is_selection(node, modules)
