"""Mapping the scales of a fake-quantised model to powers of two, so that every requantisation is a shift; and
putting biases on their accumulators' grids, so that the fake-quantised model computes what integers compute."""

from __future__ import annotations

import torch
import torch.fx as fx

from quantlib.editors.fake2true.scale_propagation import ScalePropagator
from quantlib.graphs.tracing import annotate_shapes
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import _QModule
from quantlib.quantizers import pow2_ceil, pow2_round
from quantlib.scale_ties import harmonise_scales

ROUND_BELOW_LEVELS = 128
"""Quantisers with fewer levels round their scale to the nearest power of two; others round it up (keep the range)."""


def clip_scales_pow2(model: fx.GraphModule) -> fx.GraphModule:
    """Set every quantiser's scale to a power of two (round below 128 levels, ceil otherwise), then tie the scales of
    adds and pools again (``harmonise_scales``: minima and maxima of powers of two are powers of two).

    Returns ``model``; every quantiser must be initialised (calibrated) already.
    """
    for q in model.modules():
        if isinstance(q, _QModule) and q.is_quantised:
            scale = q.scale.detach()
            pow2 = pow2_round(scale) if q.n_levels < ROUND_BELOW_LEVELS else pow2_ceil(scale)
            with torch.no_grad():
                q.set_scale(pow2)
    return harmonise_scales(model)


def quantise_biases(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...]) -> fx.GraphModule:
    """From now on every quantised Conv2d / Linear rounds its bias onto its accumulator's grid (input scale x weight
    scale, straight-through in training), as the integer model holds it. Call again after scales change; returns
    ``gm``, whose nodes now also carry their shapes and scales."""
    annotate_shapes(gm, example_input)
    ScalePropagator().annotate(gm)
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, (QConv2d, QLinear)) and module.bias is not None:
            scale = node.meta["scale"].reshape(-1).expand(module.out_features if isinstance(module, QLinear)
                                                          else module.out_channels)
            module.bias_scale = scale.to(module.bias.dtype).clone()
    return gm
