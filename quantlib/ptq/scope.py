"""What one PTQ method quantises: the layers whose weights it rounds and the activation quantisers whose ranges it
sets. Without per-layer ``method`` overrides that is the whole network; with them, each overriding method gets its
layers (and the quantisers only its layers read), and the network-wide method everything else."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx

from quantlib.layer_overrides import LayerOverride
from quantlib.modules.qactivations import QReLU
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.ptq.capture import capture, float_mode
from quantlib.quantised_layers import Layer, quantised_layers


@dataclass(frozen=True)
class Scope:
    """What one method quantises: ``layers`` (their weights) and ``activations`` (the quantisers it may set)."""

    layers: list[Layer]
    activations: list[QModule]

    def layer_names(self) -> set[str]:
        return {layer.name for layer in self.layers}


def method_scopes(gm: fx.GraphModule, resolved: dict[str, LayerOverride], main: Any) -> dict[Any, Scope]:
    """Method (a name, or a method object: ``main`` is one) -> its scope: each layer goes to its override's method
    (else, or when the override names ``main``'s method, to ``main``);
    an activation quantiser goes to the method of the layers that read it when they all have that one, else to
    ``main``. ``main`` first."""
    layers = quantised_layers(gm)
    methods = {layer.name: resolved.get(layer.name, LayerOverride()).method for layer in layers}
    owner = {name: main if m is None or m == main.name else m for name, m in methods.items()}
    readers: dict[QModule, set[Any]] = {}
    for layer in layers:
        if layer.input_quantiser is not None:
            readers.setdefault(layer.input_quantiser, set()).add(owner[layer.name])
    scopes = {name: Scope([], []) for name in dict.fromkeys([main, *owner.values()])}
    for layer in layers:
        scopes[owner[layer.name]].layers.append(layer)
    for q in gm.modules():
        if isinstance(q, QModule) and not isinstance(q, (QConv2d, QLinear)):
            methods = readers.get(q, {main})
            scopes[next(iter(methods)) if len(methods) == 1 else main].activations.append(q)
    return scopes


def scope_tensors(gm: fx.GraphModule, batches: Sequence, scope: Scope) -> dict[QModule, torch.Tensor]:
    """What each quantiser of ``scope`` quantises over ``batches``: an activation quantiser its float-model input
    (after the ReLU for a quantised ReLU), a layer its weights."""
    with float_mode(gm):
        seen = capture(gm, scope.activations, batches)
    activations = {q: torch.relu(x) if isinstance(q, QReLU) else x for q, (x, _) in seen.items()}
    return {**activations, **{layer.module: layer.module.weight for layer in scope.layers}}
