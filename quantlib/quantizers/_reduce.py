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


def _gate(grad: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``grad`` where ``mask`` holds, 0 elsewhere: one pass, without turning the boolean mask into floats first."""
    return torch.where(mask, grad, 0.0)


def _interval_gate(grad: torch.Tensor, x: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float
                   ) -> torch.Tensor:
    """``grad`` where ``lo < x < hi``, 0 elsewhere. Per-tensor bounds use ATen's fused hardtanh backward (one pass);
    per-channel bounds broadcast."""
    if _is_scalar(lo) and _is_scalar(hi):
        return torch.ops.aten.hardtanh_backward(grad, x, float(lo), float(hi))
    return torch.where((x > lo) & (x < hi), grad, 0.0)


def _above_gate(grad: torch.Tensor, x: torch.Tensor, threshold: torch.Tensor | float) -> torch.Tensor:
    """``grad`` where ``x > threshold``, 0 elsewhere (ATen's fused threshold backward for a per-tensor threshold)."""
    if _is_scalar(threshold):
        return torch.ops.aten.threshold_backward(grad, x, float(threshold))
    return torch.where(x > threshold, grad, 0.0)


def _is_scalar(value: torch.Tensor | float) -> bool:
    return not isinstance(value, torch.Tensor) or value.numel() == 1
