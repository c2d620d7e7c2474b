"""Turn in-place operations into their out-of-place forms, so that later edits may insert nodes freely.

``y = x.relu_()`` (or ``F.relu(x, inplace=True)``, or an ``nn.ReLU(inplace=True)``) overwrites ``x``. After this editor
the op writes a new tensor, and every later reader of ``x`` reads the op's result instead: the values are unchanged.
An in-place op on a view (``x[:, :2].relu_()``) also changes the viewed tensor, which a graph edit cannot express:
it is refused, as is an in-place method without an out-of-place twin (``fill_``).
"""

from __future__ import annotations

import operator

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.errors import EditorError

_INPLACE_FUNCTIONS = {torch.relu_: torch.relu, F.relu_: F.relu, F.leaky_relu_: F.leaky_relu,
                      F.hardtanh_: F.hardtanh, F.elu_: F.elu, F.rrelu_: F.rrelu}
_VIEW_METHODS = {"view", "view_as", "reshape", "flatten", "narrow", "select", "transpose", "permute", "t", "expand",
                 "expand_as", "squeeze", "unsqueeze", "unflatten", "as_strided", "diagonal", "unfold", "split",
                 "chunk", "unbind", "movedim", "swapaxes", "detach"}
_VIEW_FUNCTIONS = {operator.getitem, torch.flatten, torch.reshape, torch.narrow, torch.select, torch.transpose,
                   torch.permute, torch.squeeze, torch.unsqueeze, torch.split, torch.chunk, torch.unbind,
                   torch.movedim, torch.diagonal, torch.t}


def _is_view(node: fx.Node) -> bool:
    return (node.op == "call_method" and node.target in _VIEW_METHODS
            or node.op == "call_function" and node.target in _VIEW_FUNCTIONS)


def _is_inplace(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_method":
        return isinstance(node.target, str) and node.target.endswith("_") and not node.target.startswith("_")
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or node.kwargs.get("inplace") is True
    if node.op == "call_module":
        return getattr(modules[node.target], "inplace", False) is True
    return False


class InplaceOpFinder(Finder):
    """Every node that overwrites its first argument."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        return [ApplicationPoint(nodes=(n,), roles={"op": n}) for n in gm.graph.nodes if _is_inplace(n, modules)]


class OutOfPlaceApplier(Applier):
    """Make the op out-of-place and send every later reader of the overwritten tensor to the op's result."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        node = point["op"]
        if not node.args or not isinstance(node.args[0], fx.Node):
            raise EditorError(f"In-place op '{node.name}' ({node.target}) does not take a tensor as first argument.")
        overwritten = node.args[0]
        if _is_view(overwritten):
            raise EditorError(f"In-place op '{node.name}' ({node.target}) writes into '{overwritten.name}', a view of "
                              f"another tensor, whose values would silently stay unchanged after the rewrite. Use the "
                              f"out-of-place op and write the result back explicitly (torch.cat, torch.where).")
        if node.op == "call_method":
            if not hasattr(torch.Tensor, node.target[:-1]):
                raise EditorError(f"In-place method '{node.target}' of node '{node.name}' has no out-of-place form; "
                                  f"replace it by an out-of-place computation of the same values.")
            node.target = node.target[:-1]
        elif node.op == "call_function":
            node.target = _INPLACE_FUNCTIONS.get(node.target, node.target)
            if "inplace" in node.kwargs:
                node.kwargs = {**node.kwargs, "inplace": False}
        else:
            gm.get_submodule(node.target).inplace = False
        for user in list(overwritten.users):
            if user is not node and user > node:
                user.replace_input_with(overwritten, node)


FUNCTIONALISE_INPLACE = RewriteRule("FunctionaliseInplace", InplaceOpFinder(), OutOfPlaceApplier())
"""Every in-place op becomes out-of-place; values are unchanged."""
