"""DoReFa-Net weight and activation quantisers (Zhou et al. 2016); ``k = 32`` means no quantisation."""

from __future__ import annotations

from typing import Any

import torch

from quantlib.quantizers._reduce import _gate

FULL_PRECISION_BITS = 32


def _check_bits(k: int) -> None:
    """Reject bit widths DoReFa cannot use."""
    if k < 1:
        raise ValueError(f"DoReFa needs k >= 1 bits, got {k}")


class _DorefaWeights(torch.autograd.Function):
    """``2 * quantize_k(tanh(w) / (2 * max|tanh(w)|) + 0.5) - 1``; backward treats round as identity."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor, k: int) -> torch.Tensor:
        n = 2**k - 1
        t = torch.tanh(w)
        # max|tanh(w)| is a constant for the backward pass; the floor at `tiny` only avoids 0/0 for all-zero weights
        m = t.abs().max().clamp_min(torch.finfo(t.dtype).tiny)
        ctx.save_for_backward(t, m)
        u = t / (2 * m) + 0.5
        return (u.mul_(n).round_().div_(n)).mul_(2).sub_(1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        t, m = ctx.saved_tensors
        # d/dw [2 * (tanh(w) / (2m) + 0.5) - 1] = (1 - tanh(w)^2) / m
        return grad * (1 - t * t) / m, None


class _SignTimesMean(torch.autograd.Function):
    """``sign(w) * mean|w|`` (sign(0) = +1); the gradient passes straight through."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor) -> torch.Tensor:
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * w.abs().mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _DorefaActivations(torch.autograd.Function):
    """``quantize_k(clamp(x, 0, 1))``; STE passes the gradient where ``0 <= x <= 1``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, k: int) -> torch.Tensor:
        n = 2**k - 1
        ctx.save_for_backward((x >= 0) & (x <= 1))
        return x.clamp(0, 1).mul_(n).round_().div_(n)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None]:
        (inside,) = ctx.saved_tensors
        return _gate(grad, inside), None


def dorefa_weights(w: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa weights ``2 * quantize_k(tanh(w) / (2 * max|tanh(w)|) + 0.5) - 1`` in [-1, 1]; for ``k = 1`` the
    paper's ``sign(w) * mean|w|`` (gradient straight through); ``k = 32`` returns ``w``.

    ``quantize_k(r) = round((2**k - 1) * r) / (2**k - 1)``. The backward pass is the derivative of the expression
    with round replaced by identity, and max|tanh(w)| treated as a constant (detached).
    """
    _check_bits(k)
    if k == FULL_PRECISION_BITS:
        return w
    if k == 1:
        return _SignTimesMean.apply(w)
    return _DorefaWeights.apply(w, k)


def dorefa_activations(x: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa activations ``quantize_k(clamp(x, 0, 1))`` with gradient ``g * 1[0 <= x <= 1]``.

    ``k = 32`` returns ``x`` unchanged.
    """
    _check_bits(k)
    if k == FULL_PRECISION_BITS:
        return x
    return _DorefaActivations.apply(x, k)
