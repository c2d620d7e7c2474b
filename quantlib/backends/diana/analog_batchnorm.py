"""The BatchNorm of an analog layer, which DIANA applies after the ADC as an 8-bit per-channel affine.

The analog array's weights are ternary with one scale per layer, so a BatchNorm cannot be folded into them. It stays a
BatchNorm (trained as usual) until the power-of-two stage gives it the scale of its input, the ADC sum. From then on it
uses its running statistics and computes what the chip computes (docs/diana-numerics.md), its integers rounded
straight-through so that retraining adapts gamma and beta to them. With gamma' = eps_in * gamma / sigma and
beta' = beta - mu * gamma / sigma, and the largest p <= 15 with 2^p * max(|gamma'|, |beta'|) < 128:
``mul = clamp(round(2^p gamma'), -128, 127)``, ``add = clamp(round(2^p beta'), -128, 127)``, and the output is
``(acc * mul + add) / 2^p`` for the integer ADC sum ``acc``: integers on a grid of 2^-p, which the next
requantisation divides by a power of two.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from quantlib.graphs.tracing import leaf_module
from quantlib.modules.saved_shapes import resize_buffers_to_saved

AFFINE_BITS = 8
MAX_P = 15


@leaf_module
class AnalogBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d that becomes DIANA's post-ADC integer affine once ``input_scale`` is set (empty: float)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_features, eps, momentum)
        self.register_buffer("input_scale", torch.empty(0))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm2d) -> AnalogBatchNorm:
        """An AnalogBatchNorm with ``bn``'s parameters and statistics (``bn`` must be affine and track statistics)."""
        if not (bn.affine and bn.track_running_stats):
            raise ValueError("An analog layer's BatchNorm must be affine and track running statistics.")
        new = cls(bn.num_features, bn.eps, bn.momentum)
        new.load_state_dict(bn.state_dict(), strict=False)
        return new.to(bn.weight.device).train(bn.training)

    @property
    def is_mapped(self) -> bool:
        return self.input_scale.numel() > 0

    def real_affine(self) -> tuple[torch.Tensor, torch.Tensor]:
        """gamma / sigma and beta - mu * gamma / sigma, per channel, with the running statistics."""
        g = self.weight / torch.sqrt(self.running_var + self.eps)
        return g, self.bias - self.running_mean * g

    def integer_affine(self) -> tuple[torch.Tensor, torch.Tensor, int]:
        """``(mul, add, p)``: the integers of the chip's affine (see the module doc), in float64; needs
        ``input_scale``."""
        mul, add, p = self._affine(torch.float64)
        return mul.detach(), add.detach(), p

    def _affine(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, int]:
        """mul and add rounded straight-through (their values exact integers, their gradients gamma's and beta's)."""
        if not self.is_mapped:
            raise ValueError("This analog BatchNorm has no input scale yet: clip_scales_pow2() gives it the ADC's.")
        g, b = (t.to(dtype) for t in self.real_affine())
        gamma, beta = self.input_scale.to(dtype) * g, b
        largest = float(torch.maximum(gamma.detach().abs().max(), beta.detach().abs().max()))
        limit = 2 ** (AFFINE_BITS - 1)
        p = MAX_P if largest == 0 else min(MAX_P, math.ceil(math.log2(limit / largest)) - 1)

        def to_integers(t: torch.Tensor) -> torch.Tensor:
            scaled = t * 2.0 ** p
            return (torch.round(scaled).detach() + (scaled - scaled.detach())).clamp(-limit, limit - 1)

        return to_integers(gamma), to_integers(beta), p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.is_mapped:
            return super().forward(x)
        mul, add, p = self._affine(x.dtype)
        shape = (1, -1, 1, 1)
        acc = x / self.input_scale.to(x.dtype)
        return (acc * mul.reshape(shape) + add.reshape(shape)) * 2.0 ** -p

    def _load_from_state_dict(self, state_dict, prefix, *args) -> None:
        resize_buffers_to_saved(self, state_dict, prefix, ("input_scale",))
        super()._load_from_state_dict(state_dict, prefix, *args)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mapped={self.is_mapped}"
