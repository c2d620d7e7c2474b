"""The generic entry point, independent of any hardware: float model -> fake-quantised GraphModule ready for QAT."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import ComposedEditor, Editor, FixedPoint, Rewriter
from quantlib.editors.canonicalise import canonicalise
from quantlib.editors.float2fake import (
    ACTIVATION_FUSER,
    AddTreeHarmoniser,
    Interposer,
    ModuleFilter,
    ModuleWiseConverter,
)
from quantlib.layer_overrides import LayerOverride, Overrides, resolve_overrides, set_input_bits, weight_rules
from quantlib.preflight import GENERIC, preflight, raise_refusals
from quantlib.quantised_layers import quantised_layers
from quantlib.specs import QuantiserSpec


def _spec(qrange: dict[str, Any], qop: str = "floor") -> QuantiserSpec:
    return QuantiserSpec.from_spec({"qrange": qrange, "qop": qop})


@dataclass(frozen=True)
class QuantisationSpec:
    """The quantisers of a whole network: weights of Conv/Linear, ReLU outputs, and every other activation."""

    weights: QuantiserSpec = field(default_factory=lambda: _spec({"bitwidth": 8, "signed": True}))
    relu: QuantiserSpec = field(default_factory=lambda: _spec({"bitwidth": 8, "signed": False}, qop="pact"))
    activations: QuantiserSpec = field(default_factory=lambda: _spec({"bitwidth": 8, "signed": True}))

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | QuantisationSpec | None) -> QuantisationSpec:
        """Build from {'weights': ..., 'relu': ..., 'activations': ...} (each a quantiser spec dict); missing keys
        keep the 8-bit per-tensor defaults."""
        if spec is None or isinstance(spec, QuantisationSpec):
            return spec or cls()
        unknown = set(spec) - {"weights", "relu", "activations"}
        if unknown:
            raise ValueError(f"Quantisation spec key(s) {sorted(unknown)} are not allowed; allowed keys are "
                             f"['weights', 'relu', 'activations'].")
        return cls(**{k: QuantiserSpec.from_spec(v) for k, v in spec.items()})


def float_to_fake_editors(spec: QuantisationSpec, quantise_outputs: bool = False, merge_adds: bool = True,
                          overrides: Mapping[str, LayerOverride] | None = None) -> list[Editor]:
    """The float-to-fake pipeline for a canonical graph, in order; with ``quantise_outputs`` a linear op that is a
    network output (logits) is requantised too; without ``merge_adds`` every add stays a two-input add with its own
    quantised output (hardware that adds two tensors at a time); ``overrides`` (``resolve_overrides``) give layers
    their own weight specs or keep them float."""
    return [
        ModuleWiseConverter(weight_rules(spec.weights, overrides or {})
                            + [(ModuleFilter(types=(nn.ReLU, nn.ReLU6)), spec.relu)]),
        AddTreeHarmoniser(spec.activations, spec.activations, merge_adds),  # adds quantise (and harmonise) inputs
        Interposer(spec.activations, quantise_outputs),  # quantise inputs, off-grid linear inputs, accumulators
        FixedPoint(Rewriter(ACTIVATION_FUSER)),                             # no quantiser fed only by a quantiser
    ]


def quantize(model: nn.Module,
             example_input: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
             spec: dict[str, Any] | QuantisationSpec | None = None,
             overrides: Overrides | None = None, quantise_outputs: bool = False) -> fx.GraphModule:
    """Canonicalise ``model`` (BatchNorm folded), check that every construct has an integer form (UnsupportedOpError
    listing every one that has not, with its source line and fix), and make it fake-quantised per ``spec`` (default:
    8-bit per tensor), with the per-layer ``overrides`` of ``quantlib.layer_overrides`` (weight bits, granularity,
    input bits, kept in float; a PTQ ``method`` is refused here); with ``quantise_outputs`` a linear op that is a
    network output (the logits) gets an output quantiser too.

    The result computes in float until ``calibrate(result, batches)`` initialises its quantisers; ``model`` itself is
    left untouched.
    """
    gm = canonicalise(model, example_input)
    raise_refusals(GENERIC.target, preflight(gm, GENERIC))
    resolved = resolve_overrides(gm, overrides)
    with_method = sorted(name for name, override in resolved.items() if override.method is not None)
    if with_method:
        raise ValueError(f"Overrides of {with_method} name a PTQ method, which quantize (for QAT) does not use; use "
                         f"quantlib.ptq.quantize, or drop 'method'.")
    editors = float_to_fake_editors(QuantisationSpec.from_spec(spec), quantise_outputs, overrides=resolved)
    gm = ComposedEditor(editors).run(gm)  # canonicalise's copy
    set_input_bits(quantised_layers(gm), resolved)
    return gm

