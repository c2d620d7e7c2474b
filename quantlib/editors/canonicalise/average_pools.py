"""Every torch average-pool module becomes quantlib's ``AveragePool2d`` (same values, computed exactly), so that later
stages know one average pool; pools that divide their windows by different counts are left as they are."""

from __future__ import annotations

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, Rewriter
from quantlib.modules.average_pool import AveragePool2d

TORCH_AVERAGE_POOLS = (nn.AvgPool2d, nn.AdaptiveAvgPool2d)


class TorchAveragePoolFinder(Finder):
    """Every call of an ``nn.AvgPool2d`` / ``nn.AdaptiveAvgPool2d`` that an AveragePool2d can compute."""

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        return [ApplicationPoint((node,), {"pool": node}) for node in gm.graph.nodes
                if node.op == "call_module" and isinstance(modules[node.target], TORCH_AVERAGE_POOLS)
                and AveragePool2d.from_torch(modules[node.target]) is not None]


class AveragePoolApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        name = point["pool"].target
        gm.add_submodule(name, AveragePool2d.from_torch(gm.get_submodule(name), name))


class CanonicalAveragePools(Rewriter):
    def __init__(self) -> None:
        super().__init__(TorchAveragePoolFinder(), AveragePoolApplier())
