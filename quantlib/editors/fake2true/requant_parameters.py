"""From scales to the integers of a requantisation: ``y = floor((x * mul + add) / 2**shift)`` approximates
``y = x * ratio`` with ``ratio = eps_in / eps_out`` (exactly when every ratio is a power of two)."""

from __future__ import annotations

import math

import torch

MUL_BITS = 24
"""Precision of the multiplier when a ratio is not a power of two (float scales): its relative error is below
2^-23, so a requantised value is off only within ~1e-5 of a rounding boundary for outputs up to 127; ``x * mul``
stays an exact float64 (as the integer ONNX computes it) for accumulators up to 2^29."""


def is_power_of_two(t: torch.Tensor) -> bool:
    """Whether every element of ``t`` is exactly 2**k for an integer k."""
    mantissa, _ = torch.frexp(t.double())
    return bool(((mantissa == 0.5) & (t > 0)).all())


def requant_mul_shift(ratio: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Integer ``mul`` (per element of ``ratio``) and one ``shift`` >= 0 with ``mul / 2**shift`` = ``ratio``, exactly
    when every ratio is a power of two, else to ``MUL_BITS`` bits."""
    ratio = ratio.double()
    if bool((ratio <= 0).any()):
        raise ValueError(f"Requantisation ratios must be positive, got {ratio.flatten().tolist()}.")
    if is_power_of_two(ratio):
        exponents = torch.log2(ratio).round()
        shift = max(0, int(-exponents.min()))
        return torch.pow(2.0, exponents + shift), shift
    shift = max(0, MUL_BITS - 1 - math.floor(math.log2(float(ratio.max()))))
    return torch.round(ratio * 2.0 ** shift), shift
