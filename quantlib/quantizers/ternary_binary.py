"""Ternary ({-scale, 0, +scale}) and binary ({-scale, +scale}) weight quantisers with a fixed scale."""

from __future__ import annotations

from typing import Any

import torch

from quantlib.quantizers._reduce import _gate, _sum_to_shape


class _TernaryQuant(torch.autograd.Function):
    """``scale * floor(clamp(w / scale, -1, 1) + 0.5)``; STE passes the gradient where ``|w| <= scale``."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w.abs() <= scale)
        ctx.w_shape = w.shape
        return scale * (w / scale).clamp_(-1, 1).add_(0.5).floor_()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        (inside,) = ctx.saved_tensors
        dw = _sum_to_shape(_gate(grad, inside), ctx.w_shape) if ctx.needs_input_grad[0] else None
        return dw, None


class _BinaryQuant(torch.autograd.Function):
    """``scale * sign(w)`` with ``sign(0) = +1``; STE passes the gradient where ``|w| <= scale``."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w.abs() <= scale)
        ctx.w_shape = w.shape
        return torch.where(w >= 0, scale, -scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        (inside,) = ctx.saved_tensors
        dw = _sum_to_shape(_gate(grad, inside), ctx.w_shape) if ctx.needs_input_grad[0] else None
        return dw, None


def ternary_quantize(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Ternary weights ``scale * floor(clamp(w / scale, -1, 1) + 0.5)`` in {-scale, 0, +scale} (threshold scale/2).

    Gradient ``g * 1[|w| <= scale]``; no gradient flows to ``scale``.
    """
    return _TernaryQuant.apply(w, scale)


def binary_quantize(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Binary weights ``scale * sign(w)`` in {-scale, +scale}, with ``sign(0) = +1``.

    Gradient ``g * 1[|w| <= scale]``; no gradient flows to ``scale``.
    """
    return _BinaryQuant.apply(w, scale)
