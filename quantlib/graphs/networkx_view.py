"""A networkx view of an fx graph, for analysis and tests."""

from __future__ import annotations

import networkx as nx
import torch.fx as fx


def to_networkx(gm: fx.GraphModule) -> nx.DiGraph:
    """A DiGraph with one vertex per fx node (keyed by node name) and one edge per data dependency.

    Vertex attributes: ``op``, ``target`` (a string) and, for call_module nodes, ``module_type`` (the class name).
    """
    g = nx.DiGraph()
    modules = dict(gm.named_modules())
    for node in gm.graph.nodes:
        attrs = {"op": node.op, "target": node.target if isinstance(node.target, str) else
                 getattr(node.target, "__name__", str(node.target))}
        if node.op == "call_module":
            attrs["module_type"] = type(modules[node.target]).__name__
        g.add_node(node.name, **attrs)
        for arg in node.all_input_nodes:
            g.add_edge(arg.name, node.name)
    return g
