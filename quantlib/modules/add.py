"""The modular form of a tensor + tensor addition, so that later stages can quantise and harmonise it."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.graphs.tracing import leaf_module


@leaf_module
class Add(nn.Module):
    """``x + y`` as a module (residual connections); canonicalisation turns every tensor addition into one."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x + y
