"""Insert activation quantisers where integer hardware needs integers: at every network input, where a quantised
linear op reads values that are not on a quantisation grid, and after every op that leaves the grid (a linear op's
accumulator, an average) when anything but a quantiser reads it (a linear op may feed the output directly): hardware
requantises every layer's result before any other op reads it.

The quantiser goes right after the node that produces the off-grid values, and every reader of that node reads the
quantiser instead: one integer tensor per value, as the hardware holds it.
"""

from __future__ import annotations

import torch.fx as fx

from quantlib.editors.base import ApplicationPoint, Applier, Finder, Rewriter, RewriteRule
from quantlib.editors.float2fake.grid import grid_source, is_quantiser, needs_requantisation
from quantlib.graphs.naming import unique_submodule_name
from quantlib.graphs.tracing import same_shape
from quantlib.modules.qactivations import QIdentity
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.specs import QuantiserSpec


class UnquantisedSourceFinder(Finder):
    """Network inputs not read by a lone quantiser, producers of off-grid inputs of quantised linear ops, and
    grid-leaving ops whose result other ops (or, with ``outputs``, the network's output) read unrequantised."""

    def __init__(self, outputs: bool = False) -> None:
        self.outputs = outputs

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        sources: dict[fx.Node, None] = {}
        for node in gm.graph.nodes:
            if node.op == "placeholder":
                readers = list(node.users)
                if not (len(readers) == 1 and is_quantiser(readers[0], modules)):
                    sources[node] = None
            elif node.op == "call_module" and isinstance(modules[node.target], (QConv2d, QLinear)):
                source = grid_source(node.args[0], modules)
                if not is_quantiser(source, modules):
                    sources[source] = None
            if needs_requantisation(node, modules, self.outputs):
                sources[node] = None
        return [ApplicationPoint((s,), {"source": s}) for s in sources]


class QuantiserInsertingApplier(Applier):
    """Put a QIdentity right after the source node; all the source's readers read the quantiser instead."""

    def __init__(self, spec: QuantiserSpec) -> None:
        self.spec = spec

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        source = point["source"]
        if source.op == "call_module":
            parent, _, leaf = source.target.rpartition(".")
        else:
            parent, leaf = "", source.name
        name = unique_submodule_name(gm, parent, f"{leaf}_quantiser")
        gm.add_submodule(name, QIdentity(self.spec, name))
        with gm.graph.inserting_after(source):
            quantiser = gm.graph.call_module(name, (source,))
        same_shape(quantiser, source)
        source.replace_all_uses_with(quantiser, delete_user_cb=lambda user: user is not quantiser)


class Interposer(Rewriter):
    """After this editor every network input and every quantised linear op's input is fake-quantised; with
    ``outputs``, so is every linear op's accumulator that is a network output (hardware that ends every layer with a
    requantisation, the last one included)."""

    def __init__(self, spec: QuantiserSpec, outputs: bool = False) -> None:
        super().__init__(RewriteRule("Interposer", UnquantisedSourceFinder(outputs), QuantiserInsertingApplier(spec)))
