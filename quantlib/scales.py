"""Mapping the scales of a fake-quantised model to powers of two, so that every requantisation is a shift."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qmodule import _QModule
from quantlib.quantizers import pow2_ceil, pow2_round

ROUND_BELOW_LEVELS = 128
"""Quantisers with fewer levels round their scale to the nearest power of two; others round it up (keep the range)."""


def clip_scales_pow2(model: nn.Module) -> nn.Module:
    """Set every quantiser's scale to a power of two (round below 128 levels, ceil otherwise), then re-harmonise adds.

    Returns ``model``; every quantiser must be initialised (calibrated) already.
    """
    for q in model.modules():
        if isinstance(q, _QModule) and q.is_quantised:
            scale = q.scale.detach()
            pow2 = pow2_round(scale) if q.n_levels < ROUND_BELOW_LEVELS else pow2_ceil(scale)
            with torch.no_grad():
                q.set_scale(pow2)
    for add in (m for m in model.modules() if isinstance(m, QHarmonisedAdd)):
        add.harmonise()
    return model
