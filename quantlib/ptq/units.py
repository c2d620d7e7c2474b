"""Reconstruction units (BRECQ's blocks): each residual block (the nodes of one module that holds an add) is one
unit; every other quantised layer, with the activation quantiser that reads it, is a unit of its own. A unit runs on
its own as a GraphModule over the model's modules, from its one input to its one output."""

from __future__ import annotations

from dataclasses import dataclass

import torch.fx as fx

from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear


@dataclass(frozen=True)
class Unit:
    """``name``: the block's module path or the layer's name; ``layers``: its quantised layers' names; ``graph``: the
    unit as a module (shares the model's submodules); ``source`` / ``sink``: the model's nodes it reads and writes."""

    name: str
    layers: tuple[str, ...]
    graph: fx.GraphModule
    source: fx.Node
    sink: fx.Node


def reconstruction_units(gm: fx.GraphModule) -> list[Unit]:
    """The units of ``gm`` in execution order; a block whose nodes do not form a single-input, single-output run
    falls back to one unit per layer."""
    modules = dict(gm.named_modules())
    nodes = [n for n in gm.graph.nodes if n.op not in ("placeholder", "output")]
    blocks = {n.target.rpartition(".")[0] for n in nodes
              if n.op == "call_module" and isinstance(modules[n.target], QHarmonisedAdd) and "." in n.target}
    units, i = [], 0
    while i < len(nodes):
        node = nodes[i]
        block = _block_of(node, blocks)
        if block is not None:
            end = max(j for j, n in enumerate(nodes) if _block_of(n, blocks) == block)
            unit = _unit(gm, block, nodes[i:end + 1], modules)
            if unit is not None:
                units.append(unit)
                i = end + 1
                continue
        if node.op == "call_module" and isinstance(modules[node.target], (QConv2d, QLinear)):
            run = [node]
            users = list(node.users)
            if len(users) == 1 and users[0].op == "call_module" and \
                    isinstance(modules[users[0].target], (QIdentity, QReLU)):
                run.append(users[0])
            units.append(_unit(gm, node.target, run, modules))
            i = nodes.index(run[-1]) + 1
            continue
        i += 1
    return units


def _block_of(node: fx.Node, blocks: set[str]) -> str | None:
    if node.op != "call_module":
        return None
    return next((b for b in blocks if node.target.startswith(b + ".")), None)


def _unit(gm: fx.GraphModule, name: str, run: list[fx.Node], modules: dict) -> Unit | None:
    """The nodes ``run`` as a unit, or None if they read more than one outside value or are read outside except at
    their last node."""
    inside = set(run)
    sources = {a for n in run for a in n.all_input_nodes if a not in inside}
    leaks = [n for n in run[:-1] if any(u not in inside for u in n.users)]
    if len(sources) != 1 or leaks:
        return None
    (source,) = sources
    graph = fx.Graph()
    env = {source: graph.placeholder("x")}
    for node in run:
        env[node] = graph.node_copy(node, lambda a: env[a])
    graph.output(env[run[-1]])
    layers = tuple(n.target for n in run if n.op == "call_module" and isinstance(modules[n.target], (QConv2d, QLinear)))
    return Unit(name, layers, fx.GraphModule(gm, graph), source, run[-1])
