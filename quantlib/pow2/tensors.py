"""The quantised tensors of the power-of-two pipeline by type: every Conv2d / Linear's ``weight`` and ``bias``, the
``input`` it reads and the ``output`` it writes. Of the activation quantisers, those reading the network's inputs
have the configuration's ``input`` bits; every other one (a layer's output, a sum) quantises something the network
computes and has its ``output`` bits. ReLU outputs stay unsigned; the others are signed (symmetric) or have a learned
zero point (not symmetric)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch.fx as fx
from torch import nn

from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import QModule
from quantlib.pow2.config import TensorQuantisation
from quantlib.quantised_layers import input_quantisers, quantised_layers
from quantlib.specs import QRange


@dataclass(frozen=True)
class LayerTensor:
    """One quantised tensor of a layer: ``key`` is ``"<layer>.<kind>"`` (``"<add>.input.<index>"`` for an add's
    inputs); ``layer`` is a Conv2d / Linear, an add, or the quantiser itself for one that belongs to neither;
    ``quantiser`` holds its grid (the layer itself for weights and biases)."""

    key: str
    kind: str
    layer: nn.Module
    quantiser: QModule
    index: int = 0


def layer_tensors(gm: fx.GraphModule) -> list[LayerTensor]:
    """Every Conv2d / Linear's weight, bias (if it has one), input and output quantiser (if it has one), in execution
    order; then every add's input and output quantisers, then each activation quantiser not yet named (as
    ``"<quantiser>.output"``)."""
    modules = dict(gm.named_modules())
    tensors = []
    for layer in quantised_layers(gm):
        found = {"weight": layer.module, "bias": layer.module if layer.module.bias is not None else None,
                 "input": layer.input_quantiser, "output": _output_quantiser(layer.node, modules)}
        tensors += [LayerTensor(f"{layer.name}.{kind}", kind, layer.module, quantiser)
                    for kind, quantiser in found.items() if quantiser is not None]
    adds = [n.target for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], QHarmonisedAdd)]
    for name in adds:
        add = modules[name]
        tensors += [LayerTensor(f"{name}.input.{i}", "input", add, q, i) for i, q in enumerate(add.input_quantisers)]
        tensors.append(LayerTensor(f"{name}.output", "output", add, add.output_quantiser))
    named = {id(t.quantiser) for t in tensors}
    names = {id(m): name for name, m in modules.items()}
    tensors += [LayerTensor(f"{names[id(q)]}.output", "output", q, q) for q in activation_quantisers(gm)
                if id(q) not in named]
    return tensors


def _output_quantiser(node: fx.Node, modules: dict) -> QModule | None:
    """The activation quantiser that reads ``node`` alone (its output's grid): a quantiser, or the input quantiser
    of the add that reads it; or None."""
    users = list(node.users)
    module = modules.get(users[0].target) if len(users) == 1 and users[0].op == "call_module" else None
    if isinstance(module, QHarmonisedAdd):
        return module.input_quantisers[users[0].args.index(node)]
    return module if isinstance(module, (QIdentity, QReLU)) else None


def weight_quantisers(gm: fx.GraphModule) -> list[QModule]:
    """The quantised layers (each quantises its own weights)."""
    return [layer.module for layer in quantised_layers(gm)]


def activation_quantisers(gm: fx.GraphModule) -> list[QModule]:
    """Every quantiser that is not a layer's weights: inputs, outputs, sums."""
    layers = {id(m) for m in weight_quantisers(gm)}
    return [m for m in gm.modules() if isinstance(m, QModule) and id(m) not in layers]


def quantisers_of_kind(gm: fx.GraphModule, kind: str) -> list[QModule]:
    """The quantisers with the bits of tensor type ``kind``: 'weight' (the layers), 'input' (those reading the
    network's inputs) or 'output' (every other activation quantiser)."""
    if kind == "weight":
        return weight_quantisers(gm)
    if kind not in ("input", "output"):
        raise ValueError(f"Tensor type {kind!r} has no quantisers of its own; give 'weight', 'input' or 'output' (a "
                         f"bias is quantised by its layer).")
    network_inputs = {id(q) for q in input_quantisers(gm)}
    return [q for q in activation_quantisers(gm) if (id(q) in network_inputs) == (kind == "input")]


def set_activation_bits(gm: fx.GraphModule, inputs: TensorQuantisation, outputs: TensorQuantisation) -> None:
    """Give the uncalibrated activation quantisers of ``gm`` the ``input`` or ``output`` bits and symmetry."""
    for given, kind in ((inputs, "input"), (outputs, "output")):
        for quantiser in quantisers_of_kind(gm, kind):
            unsigned = quantiser.spec.qrange.offset == 0
            qrange = {"bitwidth": given.bitwidth, **({"signed": False} if unsigned else
                                                     {"signed": True} if given.symmetric else {})}
            quantiser.init_quantiser(replace(quantiser.spec, qrange=QRange.from_spec(qrange)), quantiser.qualname)
