"""Tests for TQT (trained quantisation thresholds) against numpy references of the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import tqt_quantize

# x shape, log2_t shape, axes summed for the log2_t gradient
CASES = [((6, 5), (), (0, 1)), ((4, 3, 2, 2), (4, 1, 1, 1), (1, 2, 3)), ((2, 4, 3, 3), (1, 4, 1, 1), (0, 2, 3))]
FORMATS = [(8, True), (4, False), (2, True), (3, False)]


def np_levels(n_bits: int, signed: bool) -> tuple[int, int]:
    """The integer range of the quantiser."""
    return (-(2 ** (n_bits - 1)), 2 ** (n_bits - 1) - 1) if signed else (0, 2**n_bits - 1)


def np_scale(log2_t: np.ndarray, n_bits: int, signed: bool) -> np.ndarray:
    """s = 2**ceil(log2_t) / 2**(n_bits - 1) (signed) or / 2**n_bits (unsigned)."""
    return 2.0 ** np.ceil(log2_t) / 2.0 ** (n_bits - 1 if signed else n_bits)


def make_case(seed: int, x_shape: tuple[int, ...], t_shape: tuple[int, ...], n_bits: int,
              signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """float32 log2_t (integer and fractional) and inputs on levels, ties, the range ends and beyond."""
    rng = np.random.default_rng(seed)
    log2_t = np.asarray(rng.choice(np.array([-1.5, -1.0, 0.0, 0.3, 1.0, 2.7]), size=t_shape), dtype=np.float32)
    n, p = np_levels(n_bits, signed)
    k = rng.integers(n - 3, p + 4, size=x_shape)
    frac = rng.choice(np.array([0.0, 0.0, 0.5, -0.5, 0.25]), size=x_shape)
    frac = np.where(rng.random(x_shape) < 0.3, rng.random(x_shape), frac)
    x = ((k + frac).astype(np.float32) * np_scale(log2_t, n_bits, signed)).astype(np.float32)
    return log2_t, x


@pytest.mark.parametrize(("x_shape", "t_shape", "axes"), CASES)
@pytest.mark.parametrize(("n_bits", "signed"), FORMATS)
def test_forward_exact(x_shape, t_shape, axes, n_bits: int, signed: bool) -> None:
    """The forward equals s * clamp(floor(x / s + 1/2), n, p) computed in float64 numpy, element for element."""
    log2_t, x = make_case(n_bits + 7 * len(t_shape), x_shape, t_shape, n_bits, signed)
    n, p = np_levels(n_bits, signed)
    s = np_scale(log2_t.astype(np.float64), n_bits, signed)
    expected = s * np.clip(np.floor(x.astype(np.float64) / s + 0.5), n, p)
    y = tqt_quantize(torch.from_numpy(x), torch.from_numpy(log2_t), n_bits, signed)
    np.testing.assert_array_equal(y.numpy(), expected)


@pytest.mark.parametrize(("x_shape", "t_shape", "axes"), CASES)
@pytest.mark.parametrize(("n_bits", "signed"), FORMATS)
def test_backward_matches_paper(x_shape, t_shape, axes, n_bits: int, signed: bool) -> None:
    """dx = g*1[n <= round(x/s) <= p]; dlog2_t = sum(g * s * ln2 * r), r = round(x/s) - x/s inside, n / p outside."""
    log2_t_np, x_np = make_case(5, x_shape, t_shape, n_bits, signed)
    n, p = np_levels(n_bits, signed)
    g = np.random.default_rng(6).standard_normal(x_shape).astype(np.float32)
    x = torch.from_numpy(x_np).requires_grad_()
    log2_t = torch.from_numpy(log2_t_np).requires_grad_()
    tqt_quantize(x, log2_t, n_bits, signed).backward(torch.from_numpy(g))

    s = np_scale(log2_t_np.astype(np.float64), n_bits, signed)
    z = x_np.astype(np.float64) / s
    q = np.floor(z + 0.5)
    r = np.where(q < n, n, np.where(q > p, p, q - z))
    np.testing.assert_array_equal(x.grad.numpy(), g * ((q >= n) & (q <= p)))
    expected = (g * s * math.log(2.0) * r).sum(axis=axes).reshape(t_shape)
    assert log2_t.grad.shape == log2_t.shape
    np.testing.assert_allclose(log2_t.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_backward_without_threshold_gradient() -> None:
    """When log2_t does not require a gradient only x receives one."""
    x = torch.tensor([-9.0, -0.6, 0.4, 9.0], requires_grad=True)
    log2_t = torch.tensor(1.0)
    tqt_quantize(x, log2_t, 3, True).backward(torch.ones(4))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0] and log2_t.grad is None


def test_threshold_uses_ceil_of_log2_t() -> None:
    """log2_t = 0.3 gives t = 2 and, at 2 signed bits, s = 1: the levels are -2, -1, 0, 1."""
    x = torch.tensor([-5.0, -1.6, -0.5, 0.5, 1.5, 7.0])
    y = tqt_quantize(x, torch.tensor(0.3), 2, True)
    assert y.tolist() == [-2.0, -2.0, 0.0, 1.0, 1.0, 1.0]  # ties round half up


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-64, 64, width=32), min_size=1, max_size=32),
       log2_t=st.floats(-3, 5, width=32), n_bits=st.integers(1, 8), signed=st.booleans())
def test_outputs_on_grid_in_range_and_idempotent(values: list[float], log2_t: float, n_bits: int,
                                                 signed: bool) -> None:
    """Outputs are integer multiples of s within [n*s, p*s], and quantising them again is a no-op."""
    n, p = np_levels(n_bits, signed)
    t = torch.tensor(log2_t)
    s = 2.0 ** math.ceil(log2_t) / 2.0 ** (n_bits - 1 if signed else n_bits)
    y = tqt_quantize(torch.tensor(values), t, n_bits, signed)
    levels = y.numpy() / s
    np.testing.assert_array_equal(levels, np.round(levels))
    assert levels.min() >= n and levels.max() <= p
    assert torch.equal(tqt_quantize(y, t, n_bits, signed), y)
