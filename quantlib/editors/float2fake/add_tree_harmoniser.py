"""Turn every tree of additions into one ``QHarmonisedAdd`` whose inputs share a scale (see modules/qadd.py)."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Rewriter
from quantlib.editors.patterns import OpTree, OpTreeFinder
from quantlib.modules.add import Add
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.specs import QuantiserSpec


def _is_add(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    return node.op == "call_module" and isinstance(modules[node.target], Add)


class HarmonisedAddApplier(Applier):
    """Replace the tree by one QHarmonisedAdd, registered under the root add's name, reading the tree's inputs."""

    def __init__(self, input_spec: QuantiserSpec, output_spec: QuantiserSpec) -> None:
        self.input_spec = input_spec
        self.output_spec = output_spec

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        assert isinstance(point, OpTree)
        root = point.root
        name = root.target
        gm.add_submodule(name, QHarmonisedAdd(len(point.inputs), self.input_spec, self.output_spec, name))
        with gm.graph.inserting_before(root):
            harmonised = gm.graph.call_module(name, point.inputs)
        harmonised.meta = dict(root.meta)
        root.replace_all_uses_with(harmonised)
        for node in point.nodes:  # root first, then its operands: each is unused once its reader is gone
            gm.graph.erase_node(node)


class AddTreeHarmoniser(Rewriter):
    """After this editor no float ``Add`` is left: every tree of adds is one QHarmonisedAdd."""

    def __init__(self, input_spec: QuantiserSpec, output_spec: QuantiserSpec) -> None:
        super().__init__(OpTreeFinder(_is_add), HarmonisedAddApplier(input_spec, output_spec))
