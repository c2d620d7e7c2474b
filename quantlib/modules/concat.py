"""The modular form of ``torch.cat`` along the channels, so that later stages can tie its inputs to one scale."""

from __future__ import annotations

import torch
from torch import nn

from quantlib.graphs.tracing import leaf_module


@leaf_module
class Concat(nn.Module):
    """``torch.cat(xs, dim)`` as a module; its inputs are its arguments."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
