"""Shapes read from tensors (``x.size(3)``, ``x.size()[2:]``, ``x.shape[-1]``) become the constants they are for the
example input's shape, so that ``F.avg_pool2d(out, out.size()[3])`` is an 8x8 average pool. The batch dimension is
never folded (a flattening ``x.view(x.size(0), -1)`` must work for any batch): a shape value that holds it stays
traced. Needs the shapes of an example input (``node.meta['tensor_meta']``); without them nothing is folded."""

from __future__ import annotations

import operator

import torch.fx as fx

from quantlib.editors.base import Editor

ShapeValue = tuple[object, bool]  # (the value, whether it holds the batch dimension)


def _shape_value(node: fx.Node, known: dict[fx.Node, ShapeValue]) -> ShapeValue | None:
    """The value of a shape query ``node`` (and whether it holds the batch dimension), or None."""
    if node.op == "call_method" and node.target == "size" and isinstance(node.args[0], fx.Node):
        meta = node.args[0].meta.get("tensor_meta")
        if meta is None:
            return None
        shape = tuple(int(d) for d in meta.shape)
        if len(node.args) == 1 and not node.kwargs:
            return shape, True
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        return (shape[dim], range(len(shape))[dim] == 0) if isinstance(dim, int) else None
    if node.op == "call_function" and node.target is getattr and node.args[1] == "shape":
        meta = node.args[0].meta.get("tensor_meta")
        return (tuple(int(d) for d in meta.shape), True) if meta is not None else None
    if node.op == "call_function" and node.target is operator.getitem and node.args[0] in known:
        shape, _ = known[node.args[0]]
        index = node.args[1]
        if not isinstance(shape, tuple) or not isinstance(index, (int, slice)):
            return None
        dims = range(len(shape))[index]
        holds_batch = 0 in dims if isinstance(dims, range) else dims == 0
        return shape[index], holds_batch
    return None


class FoldShapeConstants(Editor):
    """Every reader of a batch-free shape query reads the constant instead; queries nothing reads any more go."""

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        known: dict[fx.Node, ShapeValue] = {}
        for node in gm.graph.nodes:
            value = _shape_value(node, known)
            if value is not None:
                known[node] = value
        for node in list(gm.graph.nodes):
            if node in known:
                continue
            node.args = fx.node.map_arg(node.args, lambda a: _constant(a, known))
            node.kwargs = fx.node.map_arg(node.kwargs, lambda a: _constant(a, known))
        for node in reversed(list(gm.graph.nodes)):
            if node in known and not node.users:
                gm.graph.erase_node(node)
        return gm


def _constant(arg: fx.Node, known: dict[fx.Node, ShapeValue]) -> object:
    if arg in known and not known[arg][1]:
        return known[arg][0]
    return arg
