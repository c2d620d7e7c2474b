"""Uniform quantisers with a fixed scale: floor-based (DIANA) and round-based, both with a straight-through estimator.

``scale`` may be 0-d (per-tensor) or broadcast against ``x`` (per-channel); it receives no gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from quantlib.quantizers._reduce import _sum_to_shape


class _FloorQuant(torch.autograd.Function):
    """``scale * floor(clamp(x / scale, lo, hi))``; STE passes the gradient where ``lo <= x / scale <= hi``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        z = x / scale
        ctx.save_for_backward((z >= lo) & (z <= hi))
        ctx.x_shape = x.shape
        return scale * z.clamp_(lo, hi).floor_()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (inside,) = ctx.saved_tensors
        dx = _sum_to_shape(grad * inside, ctx.x_shape) if ctx.needs_input_grad[0] else None
        return dx, None, None, None


class _RoundQuant(torch.autograd.Function):
    """``scale * clamp(round(x / scale), lo, hi)``; STE passes the gradient where ``lo <= x / scale <= hi``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        z = x / scale
        ctx.save_for_backward((z >= lo) & (z <= hi))
        ctx.x_shape = x.shape
        return scale * z.round_().clamp_(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (inside,) = ctx.saved_tensors
        dx = _sum_to_shape(grad * inside, ctx.x_shape) if ctx.needs_input_grad[0] else None
        return dx, None, None, None


def floor_quantize(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """DIANA's quantiser ``scale * floor(clamp(x / scale, lo, hi))``; gradient ``g * 1[lo <= x/scale <= hi]``.

    No gradient flows to ``scale``.
    """
    return _FloorQuant.apply(x, scale, lo, hi)


def round_quantize(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``scale * clamp(round(x / scale), lo, hi)`` (round half to even); gradient ``g * 1[lo <= x/scale <= hi]``.

    No gradient flows to ``scale``.
    """
    return _RoundQuant.apply(x, scale, lo, hi)
