"""The quantised model as AIMET's PyTorch encodings file (``<name>_torch.encodings``, format version 1.0.0), so that an
AIMET user can load our power-of-two grids into a QuantizationSimModel (``load_encodings_to_sim``).

Each grid is written as AIMET states one: ``offset`` is the integer of the lowest level (-128 for a signed symmetric
8-bit grid, 0 for a ReLU's unsigned one, the learned zero point otherwise), ``min = offset * scale`` and ``max = (offset
+ 2^bits - 1) * scale``. Activation encodings sit on the module that owns the quantiser in the model (a ReLU's
output), or, for a quantiser quantlib inserted, on the layer it feeds (``input``, the network's input) or follows
(``output``, the logits), an add's on the add (``input`` "0", "1", ..., ``output``); each quantiser appears once."""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from quantlib.modules.qactivations import QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import QModule
from quantlib.pow2.config import Pow2Config
from quantlib.pow2.tensors import layer_tensors
from quantlib.quantised_layers import input_quantisers

AIMET_VERSION = "1.0.0"
QUANT_SCHEME = "post_training_tf"
"""AIMET's name for ranges from the calibration data's minimum and maximum, as our calibration sets them."""


def grid_encodings(quantiser: QModule, symmetric: bool) -> list[dict[str, Any]]:
    """One AIMET encoding per slice of ``quantiser``'s grid (per output channel for per-channel weights)."""
    scales = quantiser.scale.detach().reshape(-1).to(torch.float64)
    zeros = quantiser.zero.reshape(-1).expand_as(scales).to(torch.float64)
    bits = quantiser.spec.qrange.bits
    fixed = quantiser.spec.qrange.offset is not None
    return [{"bitwidth": bits, "dtype": "int", "is_symmetric": str(symmetric and fixed),
             "min": float(zero * scale), "max": float((zero + quantiser.n_levels - 1) * scale),
             "offset": int(zero), "scale": float(scale)} for scale, zero in zip(scales, zeros, strict=True)]


def aimet_encodings(gm: fx.GraphModule, config: Pow2Config) -> dict[str, Any]:
    """The encodings file's content for the quantised ``gm`` (only quantisers that are on: after ``final_ptq``
    inputs and outputs too)."""
    names = {id(m): name for name, m in gm.named_modules()}
    tensors = layer_tensors(gm)
    activations: dict[str, dict[str, Any]] = {}
    params = {f"{names[id(t.layer)]}.weight": grid_encodings(t.quantiser, config.weight.symmetric) for t in tensors
              if t.kind == "weight"}
    network_inputs = {id(q) for q in input_quantisers(gm)}
    places = {id(t.quantiser): (names[id(t.layer)], t.kind, t.index) for t in tensors
              if isinstance(t.layer, QHarmonisedAdd)}  # an add's quantisers sit on the add, wherever they are named
    seen: set[int] = set()
    for t in tensors:
        q = t.quantiser
        if t.kind in ("weight", "bias") or not q.is_quantised or id(q) in seen:
            continue
        seen.add(id(q))
        owner, role, index = places.get(id(q)) or ((names[id(q)], "output", 0) if isinstance(q, QReLU)
                                                   else (names[id(t.layer)], t.kind, t.index))
        symmetric = (config.input if id(q) in network_inputs else config.output).symmetric
        activations.setdefault(owner, {}).setdefault(role, {})[str(index)] = grid_encodings(q, symmetric)[0]
    return {
        "version": AIMET_VERSION,
        "activation_encodings": activations,
        "param_encodings": params,
        "excluded_layers": [],
        "quantizer_args": {"activation_bitwidth": config.output.bitwidth, "param_bitwidth": config.weight.bitwidth,
                           "dtype": "int", "is_symmetric": config.weight.symmetric,
                           "per_channel_quantization": config.per_channel, "quant_scheme": QUANT_SCHEME},
    }
