"""PACT (Choi et al. 2018), generalised to two learned clipping bounds ``clip_lo`` and ``clip_hi``."""

from __future__ import annotations

from typing import Any

import torch

from quantlib.quantizers._reduce import _sum_to_shape


class _PACTQuant(torch.autograd.Function):
    """``eps * floor(clamp(x, clip_lo, clip_hi) / eps)`` with ``eps = (clip_hi - clip_lo) / (n_levels - 1)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, clip_lo: torch.Tensor, clip_hi: torch.Tensor,
                n_levels: int) -> torch.Tensor:
        eps = (clip_hi - clip_lo) / (n_levels - 1)
        below = x < clip_lo
        above = x >= clip_hi
        ctx.save_for_backward(below, above)
        ctx.shapes = (x.shape, clip_lo.shape, clip_hi.shape)
        return eps * torch.clamp(x, clip_lo, clip_hi).div_(eps).floor_()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None,
                                                        torch.Tensor | None, None]:
        below, above = ctx.saved_tensors
        x_shape, lo_shape, hi_shape = ctx.shapes
        need_x, need_lo, need_hi, _ = ctx.needs_input_grad
        dx = _sum_to_shape(grad * ~(below | above), x_shape) if need_x else None
        dlo = _sum_to_shape(grad * below, lo_shape) if need_lo else None
        dhi = _sum_to_shape(grad * above, hi_shape) if need_hi else None
        return dx, dlo, dhi, None


def pact_quantize(x: torch.Tensor, clip_lo: torch.Tensor, clip_hi: torch.Tensor, n_levels: int) -> torch.Tensor:
    """PACT: ``eps * floor(clamp(x, clip_lo, clip_hi) / eps)``, ``eps = (clip_hi - clip_lo) / (n_levels - 1)``.

    Gradients: ``dx = g * 1[clip_lo <= x < clip_hi]``, ``dclip_hi = sum(g * 1[x >= clip_hi])``,
    ``dclip_lo = sum(g * 1[x < clip_lo])`` (each summed to its bound's shape); no gradient through ``eps``.
    """
    return _PACTQuant.apply(x, clip_lo, clip_hi, n_levels)
