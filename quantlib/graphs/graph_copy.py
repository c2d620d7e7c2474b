"""A copy of a GraphModule's graph over the same modules: what an edit that replaces modules (rather than changing
them) needs, at the cost of the graph alone, where ``copy.deepcopy`` copies every weight."""

from __future__ import annotations

import copy

import torch.fx as fx


def graph_copy(gm: fx.GraphModule) -> fx.GraphModule:
    """A new GraphModule over a copy of ``gm``'s graph (nodes and their ``meta`` copied) that holds ``gm``'s own leaf
    modules and attributes. Replacing a module of the copy (``add_submodule``, erasing nodes) leaves ``gm`` as it was;
    changing a shared module in place changes both. A graph that reads a module and also something inside it gets
    a deep copy instead (its container would be shared)."""
    targets = {n.target for n in gm.graph.nodes if n.op in ("call_module", "get_attr")}
    if any(".".join(t.split(".")[:i]) in targets for t in targets for i in range(1, t.count(".") + 1)):
        return copy.deepcopy(gm)
    copied = fx.GraphModule(gm, copy.deepcopy(gm.graph), class_name=type(gm).__name__)
    copied.meta = dict(gm.meta)
    copied.training = gm.training  # the root's flag only: the shared modules keep theirs
    return copied
