"""Which fx nodes carry tensors, as opposed to Python numbers such as ``x.size(0)``."""

from __future__ import annotations

import operator

import torch.fx as fx

_NUMBER_METHODS = {"size", "dim", "numel", "item", "tolist", "nelement", "ndimension"}
_NUMBER_ARITHMETIC = {operator.add, operator.sub, operator.mul, operator.floordiv, operator.truediv, operator.mod,
                      operator.getitem, operator.neg, getattr, len}


def tensor_valued_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """The nodes of ``gm`` whose value is a tensor.

    Shape annotations (``tensor_meta``) decide where present; otherwise a node is a number when it asks a tensor for its
    size (``size``, ``dim``, ...) or does arithmetic, indexing or ``getattr`` on numbers only.
    """
    tensors: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if "tensor_meta" in node.meta:
            if _is_tensor_meta(node.meta["tensor_meta"]):
                tensors.add(node)
        elif not _is_number(node, tensors):
            tensors.add(node)
    return tensors


def _is_tensor_meta(meta: object) -> bool:
    return hasattr(meta, "shape")


def _is_number(node: fx.Node, tensors: set[fx.Node]) -> bool:
    if node.op == "call_method" and node.target in _NUMBER_METHODS:
        return True
    if node.op == "call_function" and node.target in _NUMBER_ARITHMETIC:
        return not any(arg in tensors for arg in node.all_input_nodes) or node.target is getattr
    return False
