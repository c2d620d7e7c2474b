"""Tests for the power-of-two helpers."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import exact_log2, pow2_ceil, pow2_round


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_exact_powers_map_to_themselves(dtype: torch.dtype) -> None:
    """2**k for k in [-30, 30] is a fixed point of both roundings, and exact_log2 recovers k."""
    exps = list(range(-30, 31))
    x = torch.tensor([2.0**k for k in exps], dtype=dtype)
    assert torch.equal(pow2_round(x), x) and torch.equal(pow2_ceil(x), x)
    assert [exact_log2(v) for v in x.tolist()] == exps
    assert exact_log2(torch.tensor(0.25)) == -2


def test_known_values() -> None:
    """3 rounds and ceils to 4; 0.7 rounds to 0.5 and ceils to 1."""
    x = torch.tensor([3.0, 0.7])
    assert pow2_round(x).tolist() == [4.0, 0.5]
    assert pow2_ceil(x).tolist() == [4.0, 1.0]


def test_matches_numpy_log2_on_random_values() -> None:
    """On random positive values the results equal 2**round(log2 x) and 2**ceil(log2 x) from numpy."""
    x = np.exp(np.random.default_rng(50).uniform(-20, 20, size=1000))
    np.testing.assert_array_equal(pow2_round(torch.from_numpy(x)).numpy(), 2.0 ** np.round(np.log2(x)))
    np.testing.assert_array_equal(pow2_ceil(torch.from_numpy(x)).numpy(), 2.0 ** np.ceil(np.log2(x)))


@pytest.mark.parametrize("fn", [pow2_round, pow2_ceil])
@pytest.mark.parametrize("bad", [0.0, -2.5, float("nan")])
def test_non_positive_values_raise(fn, bad: float) -> None:
    """Zero, negative and NaN inputs raise ValueError naming the value."""
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        fn(torch.tensor([1.0, bad, 4.0]))


@pytest.mark.parametrize("bad", [3.0, 0.0, -2.0, 0.1, float("inf")])
def test_exact_log2_rejects_non_powers(bad: float) -> None:
    """Values that are not exact powers of two raise ValueError naming the value."""
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        exact_log2(bad)


@settings(max_examples=50, deadline=None)
@given(x=st.floats(min_value=2.0**-100, max_value=2.0**100, width=32))
def test_roundings_bracket_the_value(x: float) -> None:
    """pow2_ceil(x) is the power of two in [x, 2x); pow2_round(x) is a power of two within half an octave of x."""
    t = torch.tensor([x])
    c = pow2_ceil(t).item()
    r = pow2_round(t).item()
    exact_log2(c)
    exact_log2(r)
    assert x <= c < 2 * x
    assert abs(math.log2(r) - math.log2(x)) <= 0.5 + 1e-12
