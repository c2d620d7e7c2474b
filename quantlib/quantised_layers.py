"""The quantised linear layers of a fake-quantised graph, each with the activation quantiser its input is on, and
how a quantiser is given other bits before calibration."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.fx as fx
from torch import nn

from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.specs import QRange


@dataclass(frozen=True)
class Layer:
    """A quantised linear layer: its module name, its node, and the activation quantiser that produces its input."""

    name: str
    module: QConv2d | QLinear
    node: fx.Node
    input_quantiser: QModule | None


def quantised_layers(gm: fx.GraphModule) -> list[Layer]:
    """The quantised Conv2d / Linear layers of ``gm`` in execution order, each with its input's quantiser."""
    modules = dict(gm.named_modules())
    layers = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], (QConv2d, QLinear)):
            layers.append(Layer(node.target, modules[node.target], node, _producing_quantiser(node, modules)))
    return layers


def _producing_quantiser(node: fx.Node, modules: dict[str, nn.Module]) -> QModule | None:
    """The activation quantiser whose grid ``node``'s input is on: found back through ops of one input that keep a
    grid (reshapes, pools); an add's is its output quantiser."""
    source = node.args[0]
    while isinstance(source, fx.Node) and source.op in ("call_module", "call_function", "call_method"):
        module = modules.get(source.target) if source.op == "call_module" else None
        if isinstance(module, (QIdentity, QReLU)):
            return module
        if isinstance(module, QHarmonisedAdd):
            return module.output_quantiser
        inputs = [a for a in source.all_input_nodes if a.op != "get_attr"]
        if isinstance(module, (QConv2d, QLinear)) or len(inputs) != 1:
            return None
        source = inputs[0]
    return None


def input_quantisers(gm: fx.GraphModule) -> list[QModule]:
    """The quantisers that read the network's inputs."""
    modules = dict(gm.named_modules())
    return [modules[user.target] for node in gm.graph.nodes if node.op == "placeholder" for user in node.users
            if user.op == "call_module" and isinstance(modules[user.target], QModule)]


def with_bits(qrange: QRange, bits: int) -> QRange:
    """A ``bits``-bit range of the same kind as ``qrange``: signed, unsigned, or with a learned zero point."""
    offset = qrange.offset
    return QRange.from_spec({"bitwidth": bits} if offset is None else {"bitwidth": bits, "signed": offset < 0})


def respec_bits(quantiser: QModule, bits: int) -> None:
    """Give an uncalibrated quantiser ``bits`` bits, same signedness (or learned zero point), qop and granularity."""
    quantiser.init_quantiser(replace(quantiser.spec, qrange=with_bits(quantiser.spec.qrange, bits)),
                             quantiser.qualname)
