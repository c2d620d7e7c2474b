"""Turn every tree of additions (or every addition) into one ``QHarmonisedAdd`` whose inputs share a scale."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Rewriter, RewriteRule
from quantlib.editors.patterns import OpTree, OpTreeFinder
from quantlib.modules.add import Add
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.specs import QuantiserSpec


def _is_add(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], Add)


class HarmonisedAddApplier(Applier):
    """The root add node becomes one QHarmonisedAdd (same name, same node) reading the tree's inputs; the tree's inner
    adds go. Keeping the root node keeps other trees that read it valid."""

    def __init__(self, input_spec: QuantiserSpec, output_spec: QuantiserSpec) -> None:
        self.input_spec = input_spec
        self.output_spec = output_spec

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        assert isinstance(point, OpTree)
        root = point.root
        gm.add_submodule(root.target, QHarmonisedAdd(len(point.inputs), self.input_spec, self.output_spec,
                                                     root.target))
        root.args = tuple(point.inputs)
        for node in point.nodes[1:]:  # inner adds, parents before operands: each is unused once its reader is gone
            gm.graph.erase_node(node)


class AddTreeHarmoniser(Rewriter):
    """After this editor no float ``Add`` is left: every tree of adds is one QHarmonisedAdd, or, with
    ``merge=False``, every add is one with two inputs and a quantised output (hardware that adds two tensors)."""

    def __init__(self, input_spec: QuantiserSpec, output_spec: QuantiserSpec, merge: bool = True) -> None:
        super().__init__(RewriteRule("AddTreeHarmoniser", OpTreeFinder(_is_add, merge),
                                     HarmonisedAddApplier(input_spec, output_spec)))
