"""Uniform quantisers with a fixed scale: floor-based (DIANA) and round-based, both with a straight-through estimator.

Rounding is half up (``floor(t + 1/2)``), the rounding an integer requantisation ``floor((x * mul + 2**(shift - 1)) /
2**shift)`` reproduces exactly.

``scale`` may be 0-d (per-tensor) or broadcast against ``x`` (per-channel); it receives no gradient.
"""

from __future__ import annotations

from typing import Any

import torch

from quantlib.quantizers._reduce import _interval_gate, _sum_to_shape


class _FloorQuant(torch.autograd.Function):
    """``scale * floor(clamp(x / scale, lo, hi))``; STE passes the gradient where ``lo < x / scale < hi``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        ctx.bounds = (lo, hi)
        return (x / scale).clamp_(lo, hi).floor_().mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        return _ste_backward(ctx, grad)


def round_half_up(t: torch.Tensor) -> torch.Tensor:
    """``floor(t + 1/2)``, computed as ``floor(t) + (frac(t) >= 1/2)`` so that no float addition rounds first."""
    down = torch.floor(t)
    return down.add_((t - down) >= 0.5)


class _RoundQuant(torch.autograd.Function):
    """``scale * clamp(round_half_up(x / scale), lo, hi)``; STE passes the gradient where ``lo < x / scale < hi``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        ctx.bounds = (lo, hi)
        return round_half_up(x / scale).clamp_(lo, hi).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        return _ste_backward(ctx, grad)


def _ste_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
    """The clipped straight-through estimator shared by both uniform quantisers."""
    if not ctx.needs_input_grad[0]:
        return None, None, None, None
    x, scale = ctx.saved_tensors
    lo, hi = ctx.bounds
    if scale.numel() == 1:
        scale = float(scale)
    dx = _interval_gate(grad, x, lo * scale, hi * scale)
    return _sum_to_shape(dx, x.shape), None, None, None


def floor_quantize(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """DIANA's quantiser ``scale * floor(clamp(x / scale, lo, hi))``; gradient ``g * 1[lo < x/scale < hi]``.

    No gradient flows to ``scale``.
    """
    return _FloorQuant.apply(x, scale, lo, hi)


def round_quantize(x: torch.Tensor, scale: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """``scale * clamp(round_half_up(x / scale), lo, hi)``; gradient ``g * 1[lo < x/scale < hi]``.

    No gradient flows to ``scale``.
    """
    return _RoundQuant.apply(x, scale, lo, hi)
