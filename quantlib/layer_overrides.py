"""Per-layer overrides: what one layer, the layers matching a name pattern, or the layers of a type get instead of
the network-wide setting: weight bits, weight granularity, the bits of the layer's input, the PTQ method that rounds
its weights, or no quantisation at all (the layer stays a float module).

Keys are module names of the float model (``"fc"``), ``fnmatch`` patterns (``"layer4.*"``) or module types
(``nn.Linear``); values are ``LayerOverride`` or dicts of its fields. Where several keys select a layer, type keys
apply first, then patterns, then exact names, each setting the fields it gives."""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from torch import nn

from quantlib.editors.float2fake import ModuleFilter
from quantlib.quantised_layers import Layer, respec_bits, with_bits
from quantlib.specs import QGranularity, QuantiserSpec

LINEAR_TYPES = (nn.Conv2d, nn.Linear)
"""The layers overrides select: those with weights that quantisation converts."""


@dataclass(frozen=True)
class LayerOverride:
    """None keeps the network-wide setting. ``a_bits`` are the bits of the quantiser the layer's input is on (shared
    with the other layers that read it); ``method`` is a PTQ method name (its default parameters) or a method built
    with ``quantlib.ptq.get_method(name, **params)``; ``keep_float`` leaves the layer unquantised
    (a float module: fine for fake-quantised evaluation, refused by integer targets)."""

    w_bits: int | None = None
    a_bits: int | None = None
    per_channel: bool | None = None
    method: Any = None  # str | PTQMethod (typed loosely: overrides are below quantlib.ptq)
    keep_float: bool | None = None

    @classmethod
    def from_value(cls, value: LayerOverride | Mapping[str, Any], key: object) -> LayerOverride:
        """``value`` as a LayerOverride; unknown fields and wrong types are refused, naming ``key``."""
        if isinstance(value, LayerOverride):
            return value
        fields = [f.name for f in dataclasses.fields(cls)]
        if not isinstance(value, Mapping) or set(value) - set(fields):
            unknown = sorted(set(value) - set(fields)) if isinstance(value, Mapping) else value
            raise ValueError(f"Override {key_text(key)}: {unknown!r} is not allowed; give a dict of {fields}.")
        for name in ("w_bits", "a_bits"):
            bits = value.get(name)
            if bits is not None and (isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8):
                raise ValueError(f"Override {key_text(key)}: {name}={bits!r} must be an integer from 2 to 8.")
        for name in ("per_channel", "keep_float"):
            if name in value and value[name] is not None and not isinstance(value[name], bool):
                raise ValueError(f"Override {key_text(key)}: {name}={value[name]!r} must be True or False.")
        return cls(**value)

    def merged(self, other: LayerOverride) -> LayerOverride:
        """This override with the fields ``other`` sets."""
        given = {f.name: getattr(other, f.name) for f in dataclasses.fields(other)
                 if getattr(other, f.name) != f.default}
        return replace(self, **given)


Overrides = Mapping[str | type, LayerOverride | Mapping[str, Any]]


def key_text(key: object) -> str:
    """An override key as messages show it: a type by its name, a name or pattern quoted."""
    return key.__name__ if isinstance(key, type) else repr(key)


def resolve_overrides(model: nn.Module, overrides: Overrides | None) -> dict[str, LayerOverride]:
    """Layer name -> its override, for the Conv2d / Linear layers of ``model`` (canonical: BatchNorm folded) that
    the keys select; a key that selects no layer is refused with the layer names listed."""
    layers = {name: m for name, m in model.named_modules() if isinstance(m, LINEAR_TYPES)}
    resolved: dict[str, LayerOverride] = {}
    keys = sorted((overrides or {}).items(), key=lambda kv: _precedence(kv[0], layers))
    for key, value in keys:
        override = LayerOverride.from_value(value, key)
        chosen = _selected(key, layers)
        if not chosen:
            raise ValueError(f"Override {key_text(key)} selects no layer; the Conv2d / Linear layers are "
                             f"{list(layers)}.")
        for name in chosen:
            resolved[name] = resolved.get(name, LayerOverride()).merged(override)
    for name, override in resolved.items():
        given = [f for f in ("w_bits", "a_bits", "per_channel", "method") if getattr(override, f) is not None]
        if override.keep_float and given:
            raise ValueError(f"Layer '{name}' is kept in float by its overrides, which also give it {given}: a float "
                             f"layer has no bits, granularity or method; drop one or the other.")
    return resolved


def _precedence(key: object, layers: Mapping[str, nn.Module]) -> int:
    if isinstance(key, type):
        return 0
    if not isinstance(key, str):
        raise ValueError(f"Override key {key!r} must be a module name, an fnmatch pattern or a module type.")
    return 2 if key in layers else 1


def _selected(key: str | type, layers: Mapping[str, nn.Module]) -> list[str]:
    if isinstance(key, type):
        return [name for name, m in layers.items() if isinstance(m, key)]
    return [name for name in layers if fnmatch.fnmatchcase(name, key)]


def weight_rules(weights: QuantiserSpec, resolved: Mapping[str, LayerOverride]) -> list[tuple[ModuleFilter,
                                                                                                 QuantiserSpec]]:
    """The conversion rules of the linear layers: one per overridden layer with its own weight spec, then the
    network-wide one for the others; layers kept in float are in no rule."""
    rules = []
    for name, override in resolved.items():
        if override.keep_float or (override.w_bits is None and override.per_channel is None):
            continue
        spec = weights
        if override.w_bits is not None:
            spec = replace(spec, qrange=with_bits(weights.qrange, override.w_bits))
        if override.per_channel is not None:
            spec = replace(spec, granularity=QGranularity((0,) if override.per_channel else ()))
        rules.append((ModuleFilter(types=LINEAR_TYPES, names=(name,)), spec))
    kept_float = tuple(name for name, override in resolved.items() if override.keep_float)
    rules.append((ModuleFilter(types=LINEAR_TYPES, exclude=kept_float), weights))
    return rules


def set_input_bits(layers: list[Layer], resolved: Mapping[str, LayerOverride]) -> None:
    """Give the input quantiser of each layer with ``a_bits`` those bits (before calibration); two layers that read
    one quantiser and ask for different bits are refused, naming both."""
    asked: dict[int, tuple[str, int]] = {}
    for layer in layers:
        bits = resolved.get(layer.name, LayerOverride()).a_bits
        if bits is None:
            continue
        if layer.input_quantiser is None:
            raise ValueError(f"Override of layer '{layer.name}': a_bits={bits}, but its input is not on an activation "
                             f"quantiser of its own (it comes from another linear layer or a multi-input op).")
        earlier = asked.setdefault(id(layer.input_quantiser), (layer.name, bits))
        if earlier[1] != bits:
            raise ValueError(f"Overrides of layers '{earlier[0]}' (a_bits={earlier[1]}) and '{layer.name}' "
                             f"(a_bits={bits}) disagree, but both read the quantiser "
                             f"'{layer.input_quantiser.qualname}': give them the same a_bits.")
        respec_bits(layer.input_quantiser, bits)
