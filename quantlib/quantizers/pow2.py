"""Power-of-two helpers: rounding positive values to powers of two, and the exponent of an exact power of two.

Both roundings split ``x = m * 2**e`` with ``torch.frexp`` (``m`` in [0.5, 1)); ``x / m = 2**e`` is then exact, so
exact powers of two map to themselves without going through a (possibly inexact) ``log2``.
"""

from __future__ import annotations

import math

import torch


def _check_positive(x: torch.Tensor, name: str) -> None:
    """Raise ValueError naming the first value of ``x`` that is not strictly positive (zero, negative or NaN)."""
    bad = ~(x > 0)
    if bool(bad.any()):
        raise ValueError(f"{name} needs strictly positive values, got {x[bad].flatten()[0].item()!r}")


def pow2_round(x: torch.Tensor) -> torch.Tensor:
    """``2**round(log2 x)`` for strictly positive ``x``; exact powers of two are returned unchanged."""
    _check_positive(x, "pow2_round")
    m, _ = torch.frexp(x)
    above = x / m  # 2**e = 2 * 2**floor(log2 x)
    # round(log2 x) = e when log2(m) >= -0.5, i.e. m**2 >= 0.5 (in float64: exact for float32 and narrower)
    m64 = m.to(torch.float64)
    return torch.where(m64 * m64 >= 0.5, above, above * 0.5)


def pow2_ceil(x: torch.Tensor) -> torch.Tensor:
    """``2**ceil(log2 x)`` for strictly positive ``x``; exact powers of two are returned unchanged."""
    _check_positive(x, "pow2_ceil")
    m, _ = torch.frexp(x)
    return torch.where(m == 0.5, x, x / m)


def exact_log2(x: float | torch.Tensor) -> int:
    """The integer ``k`` with ``x == 2**k`` exactly; ValueError naming ``x`` if it is not an exact power of two."""
    value = float(x)
    m, e = math.frexp(value)
    if value <= 0 or m != 0.5:
        raise ValueError(f"{value!r} is not an exact power of two")
    return e - 1
