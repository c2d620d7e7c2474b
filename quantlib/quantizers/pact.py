"""PACT (Choi et al. 2018), generalised to two learned clipping bounds ``clip_lo`` and ``clip_hi``."""

from __future__ import annotations

from typing import Any

import torch

from quantlib.quantizers._reduce import _above_gate, _interval_gate, _sum_to_shape


class _PACTQuant(torch.autograd.Function):
    """``eps * floor(clamp(x, clip_lo, clip_hi) / eps)`` with ``eps = (clip_hi - clip_lo) / (n_levels - 1)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip_lo: torch.Tensor, clip_hi: torch.Tensor,
                n_levels: int) -> torch.Tensor:
        eps = (clip_hi - clip_lo) / (n_levels - 1)
        ctx.save_for_backward(x, clip_lo, clip_hi)
        if clip_lo.numel() == 1 and clip_hi.numel() == 1:  # Python-number bounds take ATen's fast path
            clipped = torch.clamp(x, float(clip_lo), float(clip_hi))
        else:
            clipped = torch.clamp(x, clip_lo, clip_hi)
        return clipped.div_(eps).floor_().mul_(eps)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                        torch.Tensor | None, None]:
        x, clip_lo, clip_hi = ctx.saved_tensors
        need_x, need_lo, need_hi, _ = ctx.needs_input_grad
        inside = _interval_gate(grad, x, clip_lo, clip_hi)  # lo < x < hi
        dx = _sum_to_shape(inside, x.shape) if need_x else None
        dlo = dhi = None
        if need_lo or need_hi:
            above_lo = _above_gate(grad, x, clip_lo)  # x > lo: the inside and the part above the clip
            dlo = _sum_to_shape(grad, clip_lo.shape) - _sum_to_shape(above_lo, clip_lo.shape) if need_lo else None
            dhi = _sum_to_shape(above_lo, clip_hi.shape) - _sum_to_shape(inside, clip_hi.shape) if need_hi else None
        return dx, dlo, dhi, None


def pact_quantize(x: torch.Tensor, clip_lo: torch.Tensor, clip_hi: torch.Tensor, n_levels: int) -> torch.Tensor:
    """PACT: ``eps * floor(clamp(x, clip_lo, clip_hi) / eps)``, ``eps = (clip_hi - clip_lo) / (n_levels - 1)``.

    Gradients: ``dx = g * 1[clip_lo < x < clip_hi]``, ``dclip_hi = sum(g * 1[x >= clip_hi])``,
    ``dclip_lo = sum(g * 1[x <= clip_lo])`` (each summed to its bound's shape); no gradient through ``eps``.
    """
    return _PACTQuant.apply(x, clip_lo, clip_hi, n_levels)
