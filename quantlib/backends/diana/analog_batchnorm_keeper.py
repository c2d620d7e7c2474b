"""Before BatchNorms are folded: the BatchNorm after each analog layer becomes an AnalogBatchNorm, which is kept."""

from __future__ import annotations

from collections.abc import Collection

import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.analog_batchnorm import AnalogBatchNorm
from quantlib.editors.base import ApplicationPoint, Applier, Rewriter, RewriteRule
from quantlib.editors.patterns import ModuleCallFinder


class KeepApplier(Applier):
    """The BatchNorm becomes an AnalogBatchNorm; a bias of the layer moves into its running mean (same function)."""

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        bn_node = point["bn"]
        layer = gm.get_submodule(bn_node.args[0].target)
        bn = AnalogBatchNorm.from_batchnorm(gm.get_submodule(bn_node.target))
        if layer.bias is not None:
            with torch.no_grad():
                bn.running_mean -= layer.bias.detach()
            layer.bias = None
        gm.add_submodule(bn_node.target, bn)


class AnalogBatchNormKeeper(Rewriter):
    """Every BatchNorm2d that reads one of ``layers`` (module names, which nothing else reads) is an AnalogBatchNorm."""

    def __init__(self, layers: Collection[str]) -> None:
        layers = frozenset(layers)

        def reads_analog_layer(node: fx.Node) -> bool:
            source = node.args[0]
            return source.op == "call_module" and source.target in layers and len(source.users) == 1

        super().__init__(RewriteRule("AnalogBatchNormKeeper", ModuleCallFinder((nn.BatchNorm2d,), "bn", exact=True,
                                                                           where=reads_analog_layer), KeepApplier()))
