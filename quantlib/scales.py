"""Mapping the scales of a fake-quantised model to powers of two, so that every requantisation is a shift; and
putting biases on their accumulators' grids, so that the fake-quantised model computes what integers compute."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.fx as fx
from torch import nn

from quantlib.editors.base import Editor
from quantlib.editors.fake2true.requant_parameters import is_power_of_two
from quantlib.editors.fake2true.scale_propagation import MODULE_RULES, ModuleRule, ScalePropagator
from quantlib.errors import EditorError
from quantlib.graphs.tracing import ensure_shapes
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.quantizers import pow2_ceil, pow2_round
from quantlib.scale_ties import harmonise_scales

ROUND_BELOW_LEVELS = 128
"""Quantisers with fewer levels round their scale to the nearest power of two; others round it up (keep the range)."""


POW2_ROUNDINGS = {"round": pow2_round, "ceil": pow2_ceil}
"""How a scale becomes a power of two: the nearest in log2, or the next one up (which keeps the range)."""


def clip_scales_pow2(model: fx.GraphModule, rounding: str | None = None,
                     quantisers: Iterable[QModule] | None = None) -> fx.GraphModule:
    """Set the scale of every calibrated quantiser (or of ``quantisers``) to a power of two by ``rounding`` ('round'
    or 'ceil' of ``POW2_ROUNDINGS``; None: round below 128 levels, ceil otherwise), then tie the scales of adds and
    pools again (``harmonise_scales``: minima and maxima of powers of two are powers of two).

    Returns ``model``; the quantisers must be initialised (calibrated) already.
    """
    chosen = [q for q in model.modules() if isinstance(q, QModule)] if quantisers is None else list(quantisers)
    for q in chosen:
        if q.is_quantised:
            scale = q.scale.detach()
            if rounding is None:
                pow2 = pow2_round(scale) if q.n_levels < ROUND_BELOW_LEVELS else pow2_ceil(scale)
            else:
                pow2 = POW2_ROUNDINGS[rounding](scale)
            with torch.no_grad():
                q.set_scale(pow2)
    return harmonise_scales(model)


def quantise_biases(gm: fx.GraphModule, example_input: torch.Tensor | tuple[torch.Tensor, ...],
                    scale_rules: Mapping[type[nn.Module], ModuleRule] = MODULE_RULES) -> fx.GraphModule:
    """From now on every quantised Conv2d / Linear rounds its bias onto its accumulator's grid (input scale x weight
    scale, straight-through in training), as the integer model holds it. Call again after scales change; returns
    ``gm``, whose nodes now also carry their shapes and scales (by the target's ``scale_rules``)."""
    ensure_shapes(gm, example_input)
    ScalePropagator(scale_rules).annotate(gm)
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, (QConv2d, QLinear)) and module.bias is not None:
            scale = node.meta["scale"].reshape(-1).expand(module.out_features if isinstance(module, QLinear)
                                                          else module.out_channels)
            module.bias_scale = scale.to(module.bias.dtype).clone()
    return gm


class Pow2Scales(Editor):
    """``clip_scales_pow2`` as an editor (in place): the scale of every quantiser (or of each of ``quantisers(gm)``)
    a power of two, by ``rounding``."""

    def __init__(self, rounding: str | None = None,
                 quantisers: Callable[[fx.GraphModule], list[QModule]] | None = None) -> None:
        self.rounding, self.quantisers = rounding, quantisers

    def _chosen(self, gm: fx.GraphModule) -> list[QModule]:
        return [q for q in gm.modules() if isinstance(q, QModule)] if self.quantisers is None else self.quantisers(gm)

    def requires(self, gm: fx.GraphModule) -> None:
        left = [q.qualname for q in self._chosen(gm) if not q.is_quantised]
        if left:
            raise EditorError(f"Scales can become powers of two only once calibrated; not calibrated: {left}.")

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        return clip_scales_pow2(gm, self.rounding, self._chosen(gm))

    def ensures(self, gm: fx.GraphModule) -> None:
        off = [q.qualname for q in self._chosen(gm) if not is_power_of_two(q.scale)]
        if off:
            raise EditorError(f"Scales of {off} are not powers of two after Pow2Scales.")


class FreezeScales(Editor):
    """Every quantiser's learned clipping bounds stop training (in place): from here on scales are fixed."""

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        for q in gm.modules():
            if isinstance(q, QModule):
                for name in ("clip_lo", "clip_hi"):
                    if hasattr(q, name):
                        getattr(q, name).requires_grad_(False)
        return gm


class QuantiseBiases(Editor):
    """``quantise_biases`` as an editor (in place), shapes from ``example_input``, scales by ``scale_rules``."""

    def __init__(self, example_input: torch.Tensor, scale_rules: Mapping[type[nn.Module], ModuleRule] = MODULE_RULES
                 ) -> None:
        self.example_input, self.scale_rules = example_input, scale_rules

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        return quantise_biases(gm, self.example_input, self.scale_rules)
