"""Looking inside a quantised network: the values a batch takes at the first conv, every activation quantiser and
the classifier, recorded by forward hooks, with the number of distinct values and the range per layer, which shows
that a k-bit activation really has at most 2^k levels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from quantlib.mixed_precision.layers import SwitchableActivation, SwitchableResidual

QUANTISERS = (SwitchableActivation, SwitchableResidual)


@dataclass(frozen=True)
class LayerLevels:
    """One layer's output over a batch: its bit-width (None: not a quantiser), distinct values and range."""

    layer: str
    bits: int | None
    distinct: int
    minimum: float
    maximum: float


def record_levels(model: nn.Module, x: torch.Tensor) -> list[LayerLevels]:
    """The levels of the first conv or linear op, every activation (and residual) quantiser and the last linear op
    on ``x``, in
    execution order (eval mode, no gradients; the model's mode is restored)."""
    linear = [name for name, m in model.named_modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear))]
    watched = {name: m for name, m in model.named_modules()
               if isinstance(m, QUANTISERS) or name in (linear[0], linear[-1])}
    seen: list[LayerLevels] = []

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            values = output.detach()
            bits = module.bits if isinstance(module, QUANTISERS) else None
            seen.append(LayerLevels(name, bits, int(values.unique().numel()), float(values.min()),
                                    float(values.max())))
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in watched.items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return seen
