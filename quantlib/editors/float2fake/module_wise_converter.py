"""Replace float modules by their fake-quantised counterparts, one quantiser spec per filter."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.fx as fx
from torch import nn

from quantlib.editors.base import ApplicationPoint, Applier, Finder, Rewriter, RewriteRule
from quantlib.editors.float2fake.module_filter import ModuleFilter
from quantlib.modules.qactivations import QReLU
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.specs import QuantiserSpec

QuantisedFactory = Callable[[nn.Module, QuantiserSpec, str], nn.Module]

FLOAT_TO_QUANTISED: dict[type[nn.Module], QuantisedFactory] = {
    nn.Conv2d: QConv2d.from_fp_module,
    nn.Linear: QLinear.from_fp_module,
    nn.ReLU: QReLU.from_fp_module,
    nn.ReLU6: QReLU.from_fp_module,
}
"""The float module types the converter knows, and how each becomes quantised (exact type match)."""

ConversionRule = tuple[ModuleFilter, QuantiserSpec] | tuple[ModuleFilter, QuantiserSpec, QuantisedFactory]
"""(filter, spec), or (filter, spec, factory) to build a quantised module other than the type's default."""


class ConvertibleModuleFinder(Finder):
    """Every call of a module whose exact type has a quantised counterpart and that a rule selects (first rule wins)."""

    def __init__(self, rules: Sequence[ConversionRule], conversions: dict[type[nn.Module], QuantisedFactory]) -> None:
        self.rules = list(rules)
        self.conversions = conversions

    def find(self, gm: fx.GraphModule) -> list[ApplicationPoint]:
        modules = dict(gm.named_modules())
        points = []
        for node in gm.graph.nodes:
            if node.op != "call_module" or type(modules[node.target]) not in self.conversions:
                continue
            if self.rule_for(node.target, modules[node.target]) is not None:
                points.append(ApplicationPoint((node,), {"module": node}))
        return points

    def rule_for(self, name: str, module: nn.Module) -> tuple[QuantiserSpec, QuantisedFactory] | None:
        """The spec and the factory of the first rule that selects the module, or None."""
        for selects, spec, *factory in self.rules:
            if selects(name, module):
                return spec, factory[0] if factory else self.conversions[type(module)]
        return None


class QuantisedModuleApplier(Applier):
    """Swap the module for its quantised counterpart (same name, a copy of the weights)."""

    def __init__(self, finder: ConvertibleModuleFinder) -> None:
        self.finder = finder

    def apply(self, gm: fx.GraphModule, point: ApplicationPoint) -> None:
        name = point["module"].target
        module = gm.get_submodule(name)
        spec, factory = self.finder.rule_for(name, module)
        gm.add_submodule(name, factory(module, spec, name))


class ModuleWiseConverter(Rewriter):
    """Every module selected by a rule becomes its quantised counterpart with that rule's spec.

    ``rules`` is a list of (ModuleFilter, QuantiserSpec[, factory]); for each module the first rule that selects it
    applies, building the module with its factory (default: ``conversions`` by the module's type).
    """

    def __init__(self, rules: Sequence[ConversionRule],
                 conversions: dict[type[nn.Module], QuantisedFactory] | None = None) -> None:
        finder = ConvertibleModuleFinder(rules, conversions or FLOAT_TO_QUANTISED)
        super().__init__(RewriteRule("ModuleWiseConverter", finder, QuantisedModuleApplier(finder)))
