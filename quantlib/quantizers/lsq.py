"""LSQ, learned step size quantisation (Esser et al. 2020)."""

from __future__ import annotations

import math
from typing import Any

import torch

from quantlib.quantizers._reduce import _gate, _sum_to_shape
from quantlib.quantizers.uniform import round_half_up


class _LSQQuant(torch.autograd.Function):
    """``step * round_half_up(clamp(x / step, -q_n, q_p))`` with LSQ's step-size gradient scaled by ``grad_scale``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int,
                grad_scale: float) -> torch.Tensor:
        z = x / step
        below = z <= -q_n
        above = z >= q_p
        d = None
        if ctx.needs_input_grad[1]:
            d = torch.where(below, float(-q_n), torch.where(above, float(q_p), round_half_up(z) - z))
        ctx.save_for_backward((z >= -q_n) & (z <= q_p), d)
        ctx.shapes = (x.shape, step.shape)
        ctx.grad_scale = grad_scale
        return step * round_half_up(z.clamp_(-q_n, q_p))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None]:
        inside, d = ctx.saved_tensors
        x_shape, step_shape = ctx.shapes
        dx = _sum_to_shape(_gate(grad, inside), x_shape) if ctx.needs_input_grad[0] else None
        dstep = _sum_to_shape(grad * d, step_shape) * ctx.grad_scale if ctx.needs_input_grad[1] else None
        return dx, dstep, None, None, None


def lsq_quantize(x: torch.Tensor, step: torch.Tensor, q_n: int, q_p: int, grad_scale: float) -> torch.Tensor:
    """LSQ: ``step * round_half_up(clamp(x / step, -q_n, q_p))``.

    Gradients: ``dx = g * 1[-q_n <= x/step <= q_p]`` (inclusive bounds); ``dstep = grad_scale * sum(g * d)`` with
    ``d = round_half_up(x/step) - x/step`` for ``-q_n < x/step < q_p``, ``-q_n`` at or below, ``q_p`` at or above
    the range.
    """
    return _LSQQuant.apply(x, step, q_n, q_p, grad_scale)


def lsq_grad_scale(n_elements_per_step: int, q_p: int) -> float:
    """LSQ's step-size gradient scale ``1 / sqrt(n_elements_per_step * q_p)``."""
    if n_elements_per_step <= 0 or q_p <= 0:
        raise ValueError(f"n_elements_per_step and q_p must be positive, got {n_elements_per_step} and {q_p}")
    return 1.0 / math.sqrt(n_elements_per_step * q_p)


class _LSQBinary(torch.autograd.Function):
    """``step * sign(x)`` (``sign(0) = +1``) with LSQ's gradients for the two levels ``{-step, +step}``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, step: torch.Tensor, grad_scale: float) -> torch.Tensor:
        z = x / step
        sign = torch.where(z >= 0, 1.0, -1.0).to(x.dtype)
        inside = z.abs() <= 1
        d = torch.where(inside, sign - z, sign) if ctx.needs_input_grad[1] else None
        ctx.save_for_backward(inside, d)
        ctx.shapes = (x.shape, step.shape)
        ctx.grad_scale = grad_scale
        return step * sign

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        inside, d = ctx.saved_tensors
        x_shape, step_shape = ctx.shapes
        dx = _sum_to_shape(_gate(grad, inside), x_shape) if ctx.needs_input_grad[0] else None
        dstep = _sum_to_shape(grad * d, step_shape) * ctx.grad_scale if ctx.needs_input_grad[1] else None
        return dx, dstep, None


def lsq_binary(x: torch.Tensor, step: torch.Tensor, grad_scale: float) -> torch.Tensor:
    """1-bit LSQ: ``step * sign(x)``; ``dx = g * 1[|x/step| <= 1]``, ``dstep = grad_scale * sum(g * d)`` with
    ``d = sign(z) - z`` for ``|z| <= 1``, ``sign(z)`` beyond (``z = x / step``)."""
    return _LSQBinary.apply(x, step, grad_scale)


def lsq_signed(x: torch.Tensor, step: torch.Tensor, bits: int, grad_scale: float) -> torch.Tensor:
    """LSQ on a signed ``bits``-bit grid: ``[-2^(bits-1), 2^(bits-1) - 1] * step``, or ``{-step, +step}`` at 1 bit."""
    if bits == 1:
        return lsq_binary(x, step, grad_scale)
    return lsq_quantize(x, step, 2 ** (bits - 1), 2 ** (bits - 1) - 1, grad_scale)


def lsq_initial_step(x: torch.Tensor, q_p: int) -> torch.Tensor:
    """LSQ's initial step ``2 * mean|x| / sqrt(q_p)`` (a 0-d tensor, detached)."""
    return (2.0 * x.detach().abs().mean() / math.sqrt(q_p)).clamp_min(1e-8)
