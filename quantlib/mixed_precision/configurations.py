"""Bit-width configurations of a switchable model: ``{layer name: bits}`` for every switchable conv, linear and
activation, set uniformly, at random (each layer independently), or from a logged configuration."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from quantlib.mixed_precision.layers import Switchable

BitwidthConfig = dict[str, int]


def switchable_layers(model: nn.Module) -> dict[str, Switchable]:
    """Every switchable layer of ``model`` by module name, in module order (each shared module once)."""
    layers: dict[str, Switchable] = {}
    for name, module in model.named_modules():
        if isinstance(module, Switchable) and module not in layers.values():
            layers[name] = module
    if not layers:
        raise ValueError("The model has no switchable layers: convert it with quantlib.mixed_precision.switchable().")
    return layers


def set_bitwidth(module: Switchable, bits: int) -> None:
    """``module`` computes at ``bits`` from now on (one of its options)."""
    module.set_bits(bits)


def set_uniform_bitwidth(model: nn.Module, bits: int) -> None:
    """Every switchable layer at ``bits``; a layer with a single option keeps it. A layer that has several options
    but not ``bits`` is refused, naming it."""
    layers = switchable_layers(model)
    missing = [name for name, m in layers.items() if len(m.options) > 1 and bits not in m.options]
    if missing:
        raise ValueError(f"{bits} bits is not an option of {missing}; their options: "
                         f"{sorted({k for name in missing for k in layers[name].options})}.")
    for m in layers.values():
        if len(m.options) > 1:
            m.set_bits(bits)


def set_random_bitwidths(model: nn.Module, options: Sequence[int] | None = None,
                         generator: torch.Generator | None = None) -> BitwidthConfig:
    """Each switchable layer independently at a bit-width drawn uniformly from its options (those of ``options``
    when given); returns the configuration. The same ``generator`` state gives the same configuration."""
    configuration = {}
    for name, m in switchable_layers(model).items():
        choices = [k for k in m.options if options is None or k in options] or list(m.options)
        index = int(torch.randint(len(choices), (1,), generator=generator))
        m.set_bits(choices[index])
        configuration[name] = choices[index]
    return configuration


def bitwidth_config(model: nn.Module) -> BitwidthConfig:
    """The current bit-width of every switchable layer, by name."""
    return {name: m.bits for name, m in switchable_layers(model).items()}


def apply_bitwidth_config(model: nn.Module, configuration: Mapping[str, int]) -> None:
    """Set every layer named in ``configuration`` (all switchable layers must be named) to its bit-width."""
    layers = switchable_layers(model)
    unknown = sorted(set(configuration) - set(layers))
    missing = sorted(set(layers) - set(configuration))
    if unknown or missing:
        raise ValueError(f"Bit-width configuration does not fit the model: unknown layers {unknown}, layers not "
                         f"given {missing}; the switchable layers are {list(layers)}.")
    for name, bits in configuration.items():
        if bits not in layers[name].options:
            raise ValueError(f"Bit-width configuration: layer '{name}' has options {list(layers[name].options)}, "
                             f"not {bits}.")
    for name, bits in configuration.items():
        layers[name].set_bits(bits)
