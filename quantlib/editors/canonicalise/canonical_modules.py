"""Torch modules that have a canonical equivalent become it (same values), so that later stages know one module per
operation: every average pool an ``AveragePool2d`` (computed exactly), ``nn.Hardtanh(0, 6)`` an ``nn.ReLU6``. A module
whose converter returns None (an average pool that divides its windows by different counts) is left as it is."""

from __future__ import annotations

from collections.abc import Callable

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, RewriteRule
from quantlib.modules.average_pool import AveragePool2d


def _relu6(module: nn.Hardtanh, name: str) -> nn.Module | None:
    return nn.ReLU6() if (module.min_val, module.max_val) == (0.0, 6.0) else None


CANONICAL: dict[type[nn.Module], Callable[[nn.Module, str], nn.Module | None]] = {
    nn.AvgPool2d: AveragePool2d.from_torch,
    nn.AdaptiveAvgPool2d: AveragePool2d.from_torch,
    nn.Hardtanh: _relu6,
}
"""By exact type: how a module becomes its canonical equivalent (None: it has none)."""


def _canonical(module: nn.Module, name: str) -> nn.Module | None:
    convert = CANONICAL.get(type(module))
    return None if convert is None else convert(module, name)


class ConvertibleModuleFinder(Finder):
    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        return [ApplicationPoint((node,), {"module": node}) for node in gm.graph.nodes
                if node.op == "call_module" and _canonical(modules[node.target], node.target) is not None]


class CanonicalModuleApplier(Applier):
    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        name = point["module"].target
        gm.add_submodule(name, _canonical(gm.get_submodule(name), name))


CANONICAL_MODULES = RewriteRule("CanonicalModules", ConvertibleModuleFinder(), CanonicalModuleApplier())
