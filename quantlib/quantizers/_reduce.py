"""Reducing a broadcast gradient back to the shape of the (per-tensor or per-channel) parameter it belongs to."""

from __future__ import annotations

import torch


def _sum_to_shape(grad: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """Sum ``grad`` over the dimensions that broadcasting added or expanded, so that it has exactly ``shape``."""
    shape = tuple(shape)
    if tuple(grad.shape) == shape:
        return grad
    n_lead = grad.dim() - len(shape)
    if n_lead < 0:
        raise ValueError(f"cannot reduce a gradient of shape {tuple(grad.shape)} to the larger shape {shape}")
    dims = list(range(n_lead))
    dims += [n_lead + i for i, size in enumerate(shape) if size == 1 and grad.shape[n_lead + i] != 1]
    if not dims:  # torch.sum(dim=[]) would sum over everything
        return grad.reshape(shape)
    return grad.sum(dim=dims, keepdim=True).reshape(shape)
