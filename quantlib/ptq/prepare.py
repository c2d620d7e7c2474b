"""The fake-quantised model a PTQ method starts from: every Conv2d / Linear with weights rounded to nearest, every
activation quantised, ranges calibrated on the user's data; the head and stem at 8 bits on request."""

from __future__ import annotations

from collections.abc import Iterable

import torch.fx as fx
from torch import nn

from quantlib.calibration import calibrate
from quantlib.editors.base import ComposedEditor
from quantlib.editors.canonicalise import canonicalise
from quantlib.fake_quantisation import QuantisationSpec, float_to_fake_editors
from quantlib.layer_overrides import LINEAR_TYPES, LayerOverride, resolve_overrides, set_input_bits
from quantlib.preflight import GENERIC, preflight, raise_refusals
from quantlib.ptq.capture import remember_float_parameters
from quantlib.ptq.options import PTQOptions
from quantlib.quantised_layers import input_quantisers, quantised_layers, respec_bits
from quantlib.specs import QHParamsInitStrategy

HEAD_STEM_BITS = 8
MINMAX = QHParamsInitStrategy("minmax")


def ptq_spec(options: PTQOptions, init: QHParamsInitStrategy) -> QuantisationSpec:
    """Weights rounded to nearest (per channel or per tensor); ReLU outputs unsigned, other activations signed (or,
    asymmetric, with a learned zero point, as the weights), floor with power-of-two scales, else rounded half up;
    every range set from the data by ``init``."""
    act_qop = "floor" if options.pow2 else "round"
    signed = {"signed": True} if options.symmetric else {}  # no 'signed': a learned zero point
    return QuantisationSpec.from_spec({
        "weights": {"qrange": {"bitwidth": options.w_bits, **signed}, "qop": "round", "init": init,
                    "granularity": "per-outchannel_weights" if options.per_channel else "per-array"},
        "relu": {"qrange": {"bitwidth": options.a_bits, "signed": False}, "qop": act_qop, "init": init},
        "activations": {"qrange": {"bitwidth": options.a_bits, **signed}, "qop": act_qop, "init": init},
    })


def prepare(model: nn.Module, calibration: Iterable, options: PTQOptions,
            init: QHParamsInitStrategy = MINMAX) -> tuple[fx.GraphModule, dict[str, LayerOverride]]:
    """The calibrated fake-quantised copy of ``model`` that PTQ methods refine, ranges set by ``init`` (``model`` is
    left untouched), and the resolved per-layer overrides (which win over the 8-bit head and stem)."""
    batches = list(calibration)
    if not batches:
        raise ValueError("PTQ needs calibration data: the calibration iterable gave no batch.")
    first = batches[0][0] if isinstance(batches[0], (tuple, list)) else batches[0]
    gm = canonicalise(model, first[:1])
    raise_refusals(GENERIC.target, preflight(gm, GENERIC))
    resolved = resolve_overrides(gm, options.overrides)
    modules = dict(gm.named_modules())
    linear = [n.target for n in gm.graph.nodes if n.op == "call_module" and isinstance(modules[n.target], LINEAR_TYPES)]
    editors = float_to_fake_editors(ptq_spec(options, init), quantise_outputs=False, overrides=resolved)
    gm = ComposedEditor(editors).run(gm)
    layers = quantised_layers(gm)
    if options.keep_head_stem_8bit:
        ends = {layer.name: layer for layer in layers if layer.name in (linear[0], linear[-1])}
        head_stem = [*input_quantisers(gm)] + [layer.module for name, layer in ends.items()
                                               if resolved.get(name, LayerOverride()).w_bits is None]
        if linear[-1] in ends and ends[linear[-1]].input_quantiser is not None:
            head_stem.append(ends[linear[-1]].input_quantiser)
        for quantiser in head_stem:
            respec_bits(quantiser, HEAD_STEM_BITS)
    set_input_bits(layers, resolved)
    remember_float_parameters(gm)
    return calibrate(gm, batches), resolved
