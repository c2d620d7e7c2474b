"""Which core each layer runs on: all digital, analog wherever the analog rules allow ("auto"), or as a descriptor
file says; a layer asked to go analog that cannot stays digital with the rules it breaks (a warning), or, with
``ineligible="error"``, the refusal is an error (``DianaModule.from_fp_model`` raises every error at once)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch.fx as fx
from torch import nn

from quantlib.backends.diana.hardware_rules import (
    Core,
    Finding,
    analog_eligibility,
    analog_input_findings,
    conv_findings,
    linear_findings,
)
from quantlib.editors.float2fake.grid import grid_source

AnalogPolicy = Literal["none", "auto"]
Ineligible = Literal["digital", "error"]
UNSIGNED_SOURCES = (nn.ReLU, nn.ReLU6)
LAYER_TYPES = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class CoreChoice:
    """The core of every layer and every rule each layer breaks on it (or broke on the core it was refused)."""

    cores: dict[str, Core]
    findings: dict[str, list[Finding]]

    @property
    def analog(self) -> list[str]:
        return [name for name, core in self.cores.items() if core == "analog"]


def layer_nodes(gm: fx.GraphModule) -> dict[str, fx.Node]:
    """The Conv2d / Linear calls of a canonical float graph, by module name."""
    modules = dict(gm.named_modules())
    return {n.target: n for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], LAYER_TYPES)}


def analog_findings(gm: fx.GraphModule, node: fx.Node) -> list[Finding]:
    """Why the layer called at ``node`` cannot run on the analog core (empty: it can)."""
    modules = dict(gm.named_modules())
    findings = analog_eligibility(node.target, modules[node.target])
    source = grid_source(node.args[0], modules)
    if not (source.op == "call_module" and isinstance(modules[source.target], UNSIGNED_SOURCES)):
        findings += analog_input_findings(node.target, source.name)
    return findings


def choose_cores(gm: fx.GraphModule, analog: AnalogPolicy = "none", descriptors: Mapping[str, Core] | None = None,
                 ineligible: Ineligible = "digital") -> CoreChoice:
    """The core of every layer of the canonical float graph ``gm``: ``descriptors`` (layer -> core) where given,
    else ``analog``'s policy; then every hardware rule each layer breaks on its core."""
    if analog not in ("none", "auto"):
        raise ValueError(f"analog={analog!r} is not a policy; use 'none' (all digital) or 'auto' (analog where legal).")
    if ineligible not in ("digital", "error"):
        raise ValueError(f"ineligible={ineligible!r}: use 'digital' (keep the layer digital) or 'error'.")
    modules = dict(gm.named_modules())
    cores: dict[str, Core] = {}
    findings: dict[str, list[Finding]] = {}
    for name, node in layer_nodes(gm).items():
        module = modules[name]
        policy = "analog" if analog == "auto" and isinstance(module, nn.Conv2d) else "digital"
        asked = (descriptors or {}).get(name, policy)
        refusals = analog_findings(gm, node) if asked == "analog" else []
        required = ineligible == "error" and bool(descriptors) and name in descriptors
        core: Core = "digital" if refusals else asked
        cores[name] = core
        rules = conv_findings(name, module, core) if isinstance(module, nn.Conv2d) else linear_findings(name, module)
        broken = {f.rule for f in rules}  # a rule both cores share is reported once, as the error it is
        findings[name] = [_refused(f, required) for f in refusals if f.rule not in broken] + rules
    return CoreChoice(cores, findings)


def _refused(finding: Finding, required: bool) -> Finding:
    """A rule that kept a layer off the analog core: the layer runs digitally, so it is a warning, unless the
    descriptors required the analog core (``ineligible="error"``)."""
    if required:
        return dataclasses.replace(finding, message=f"cannot run on the analog core as the descriptors ask: "
                                   f"{finding.message}", severity="error")
    return dataclasses.replace(finding, message=f"stays digital: {finding.message}", severity="warning")
