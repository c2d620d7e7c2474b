"""TQT, trained quantisation thresholds (Jain et al. 2020): a power-of-two scale learned in the log2 domain."""

from __future__ import annotations

import math
from typing import Any

import torch

from quantlib.quantizers._reduce import _gate, _sum_to_shape
from quantlib.quantizers.uniform import round_half_up


def _tqt_levels(n_bits: int, signed: bool) -> tuple[int, int]:
    """The integer range [n, p] of an ``n_bits`` signed or unsigned quantiser."""
    if signed:
        return -(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1
    return 0, 2**n_bits - 1


class _TQTQuant(torch.autograd.Function):
    """``s * clamp(round_half_up(x / s), n, p)`` with
    ``s = 2**ceil(log2_t) / 2**(n_bits - 1 if signed else n_bits)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, log2_t: torch.Tensor, n_bits: int, signed: bool) -> torch.Tensor:
        n, p = _tqt_levels(n_bits, signed)
        s = torch.exp2(torch.ceil(log2_t) - (n_bits - 1 if signed else n_bits))
        z = x / s
        r = round_half_up(z)
        below = r < n
        above = r > p
        r_log2 = None
        if ctx.needs_input_grad[1]:
            r_log2 = torch.where(below, float(n), torch.where(above, float(p), r - z))
        ctx.save_for_backward(below, above, s, r_log2)
        ctx.shapes = (x.shape, log2_t.shape)
        return s * r.clamp_(n, p)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        below, above, s, r_log2 = ctx.saved_tensors
        x_shape, t_shape = ctx.shapes
        dx = _sum_to_shape(_gate(grad, ~(below | above)), x_shape) if ctx.needs_input_grad[0] else None
        dt = None
        if ctx.needs_input_grad[1]:
            # s has exactly log2_t's shape, so it can be factored out of the sum over broadcast dimensions
            dt = _sum_to_shape(grad * r_log2, t_shape) * s * math.log(2.0)
        return dx, dt, None, None


def tqt_quantize(x: torch.Tensor, log2_t: torch.Tensor, n_bits: int, signed: bool) -> torch.Tensor:
    """TQT: ``s * clamp(round_half_up(x / s), n, p)``, ``s = 2**ceil(log2_t) / 2**(n_bits-1)`` (signed) or
    ``/ 2**n_bits``.

    Gradients: ``dx = g * 1[n <= round(x/s) <= p]``; ``dlog2_t = sum(g * s * ln2 * r)`` with
    ``r = round(x/s) - x/s`` inside, ``n`` below and ``p`` above the range (ceil is straight-through).
    """
    return _TQTQuant.apply(x, log2_t, n_bits, signed)
