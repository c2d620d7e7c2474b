"""Reshaping a tensor so that each slice of a granularity becomes one row."""

from __future__ import annotations

import math

import torch


def to_rows(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``x`` as a [C, M] matrix: one row per index of the kept ``dims`` (C = 1 for per-array), columns the rest."""
    dims = tuple(d % x.dim() for d in dims)
    rest = tuple(d for d in range(x.dim()) if d not in dims)
    rows = math.prod(x.shape[d] for d in dims)
    return x.permute(*dims, *rest).reshape(rows, -1)


def broadcast_shape(x: torch.Tensor, dims: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of a per-slice quantity that broadcasts against ``x``: sizes on ``dims``, 1 elsewhere."""
    kept = {d % x.dim() for d in dims}
    return tuple(s if d in kept else 1 for d, s in enumerate(x.shape))
