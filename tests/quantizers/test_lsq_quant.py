"""Tests for LSQ (learned step size quantisation) against numpy references of the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import lsq_grad_scale, lsq_initial_step, lsq_quantize, lsq_signed

# x shape, step shape, axes summed for the step gradient
CASES = [((6, 5), (), (0, 1)), ((4, 3, 2, 2), (4, 1, 1, 1), (1, 2, 3)), ((2, 4, 3, 3), (1, 4, 1, 1), (0, 2, 3))]
RANGES = [(128, 127), (0, 15), (1, 1), (4, 3)]


def np_lsq(x: np.ndarray, step: np.ndarray, q_n: int, q_p: int) -> np.ndarray:
    """Reference LSQ forward (rounding half up: floor(z + 1/2), on z computed in the input's precision)."""
    z = np.clip(x / step, -q_n, q_p)
    return (step * np.floor(z.astype(np.float64) + 0.5)).astype(x.dtype)


def make_case(seed: int, x_shape: tuple[int, ...], step_shape: tuple[int, ...], q_n: int,
              q_p: int) -> tuple[np.ndarray, np.ndarray]:
    """Power-of-two float32 steps and inputs on levels, ties, the range ends and beyond."""
    rng = np.random.default_rng(seed)
    step = np.asarray(2.0 ** rng.integers(-4, 3, size=step_shape), dtype=np.float32)
    k = rng.integers(-q_n - 3, q_p + 4, size=x_shape)
    frac = rng.choice(np.array([0.0, 0.0, 0.5, -0.5, 0.25]), size=x_shape)
    frac = np.where(rng.random(x_shape) < 0.3, rng.random(x_shape), frac)
    return step, ((k + frac).astype(np.float32) * step).astype(np.float32)


@pytest.mark.parametrize(("x_shape", "step_shape", "axes"), CASES)
@pytest.mark.parametrize(("q_n", "q_p"), RANGES)
def test_forward_exact_for_pow2_steps(x_shape, step_shape, axes, q_n: int, q_p: int) -> None:
    """With power-of-two steps the float32 forward equals the float64 numpy reference exactly."""
    step, x = make_case(q_p + len(x_shape), x_shape, step_shape, q_n, q_p)
    y = lsq_quantize(torch.from_numpy(x), torch.from_numpy(step), q_n, q_p, 1.0)
    np.testing.assert_array_equal(y.numpy(), np_lsq(x.astype(np.float64), step.astype(np.float64), q_n, q_p))


@pytest.mark.parametrize(("x_shape", "step_shape", "axes"), CASES)
def test_forward_close_for_other_steps(x_shape, step_shape, axes) -> None:
    """With arbitrary steps the forward matches a float32 numpy reference."""
    rng = np.random.default_rng(8)
    step = np.asarray(rng.uniform(0.05, 0.9, size=step_shape), dtype=np.float32)
    x = (rng.standard_normal(x_shape) * 3).astype(np.float32)
    y = lsq_quantize(torch.from_numpy(x), torch.from_numpy(step), 8, 7, 1.0)
    np.testing.assert_allclose(y.numpy(), np_lsq(x, step, 8, 7), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("x_shape", "step_shape", "axes"), CASES)
@pytest.mark.parametrize(("q_n", "q_p"), RANGES)
def test_backward_matches_paper(x_shape, step_shape, axes, q_n: int, q_p: int) -> None:
    """dx = g*1[-q_n <= x/step <= q_p]; dstep = grad_scale * sum(g*d), d = floor(z + 1/2) - z inside, -q_n / q_p at
    or out."""
    step_np, x_np = make_case(9, x_shape, step_shape, q_n, q_p)
    g = np.random.default_rng(10).standard_normal(x_shape).astype(np.float32)
    grad_scale = 0.37
    x = torch.from_numpy(x_np).requires_grad_()
    step = torch.from_numpy(step_np).requires_grad_()
    lsq_quantize(x, step, q_n, q_p, grad_scale).backward(torch.from_numpy(g))

    z = x_np.astype(np.float64) / step_np
    d = np.where(z <= -q_n, -q_n, np.where(z >= q_p, q_p, np.floor(z + 0.5) - z))
    np.testing.assert_array_equal(x.grad.numpy(), g * ((z >= -q_n) & (z <= q_p)))
    expected = grad_scale * (g * d).sum(axis=axes).reshape(step_shape)
    assert step.grad.shape == step.shape
    np.testing.assert_allclose(step.grad.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_range_ends_get_input_gradient_and_clip_step_gradient() -> None:
    """At x/step = -q_n and q_p the input gradient is 1 and d is -q_n and q_p (not round(z) - z = 0)."""
    x = torch.tensor([-4.0, 3.0, -5.0, 9.0], requires_grad=True)
    step = torch.tensor(1.0, requires_grad=True)
    lsq_quantize(x, step, 4, 3, 1.0).backward(torch.ones(4))
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]
    assert step.grad.item() == -4 + 3 - 4 + 3


def test_backward_without_step_gradient() -> None:
    """When the step does not require a gradient only x receives one."""
    x = torch.tensor([-9.0, -0.6, 0.4, 9.0], requires_grad=True)
    step = torch.tensor(0.5)
    lsq_quantize(x, step, 4, 3, 1.0).backward(torch.ones(4))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0] and step.grad is None


def test_lsq_grad_scale() -> None:
    """1 / sqrt(n * q_p), and non-positive arguments are rejected."""
    assert lsq_grad_scale(1000, 127) == pytest.approx(1.0 / math.sqrt(127000))
    with pytest.raises(ValueError, match="positive"):
        lsq_grad_scale(0, 7)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-64, 64, width=32), min_size=1, max_size=32), exp=st.integers(-4, 4),
       q_n=st.integers(0, 8), q_p=st.integers(1, 8))
def test_outputs_on_grid_in_range_and_idempotent(values: list[float], exp: int, q_n: int, q_p: int) -> None:
    """Outputs are integer multiples of the step within [-q_n*step, q_p*step], and quantising again is a no-op."""
    step = torch.tensor(2.0**exp)
    y = lsq_quantize(torch.tensor(values), step, q_n, q_p, 1.0)
    levels = (y / step).numpy()
    np.testing.assert_array_equal(levels, np.round(levels))
    assert levels.min() >= -q_n and levels.max() <= q_p
    assert torch.equal(lsq_quantize(y, step, q_n, q_p, 1.0), y)


def test_one_bit_lsq_is_plus_minus_the_step_with_lsqs_gradients() -> None:
    """z = x / step = [-3, -0.5, 0, 0.25, 2]: forward step * sign(z); dx passes where |z| <= 1; dstep sums
    sign(z) - z inside and sign(z) outside, times the gradient scale."""
    x = torch.tensor([-1.5, -0.25, 0.0, 0.125, 1.0], requires_grad=True)
    step = torch.tensor(0.5, requires_grad=True)
    out = lsq_signed(x, step, 1, 0.5)
    assert out.tolist() == [-0.5, -0.5, 0.5, 0.5, 0.5]
    out.backward(torch.ones(5))
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]
    assert step.grad.item() == pytest.approx(0.5 * (-1 + (-1 + 0.5) + 1 + (1 - 0.25) + 1))


def test_signed_lsq_grids_and_the_initial_step() -> None:
    x = torch.linspace(-3, 3, 13)
    assert lsq_signed(x, torch.tensor(0.5), 2, 1.0).unique().tolist() == [-1.0, -0.5, 0.0, 0.5]  # [-2, 1] * step
    z = torch.arange(-10.0, 10.0)
    assert torch.equal(lsq_signed(z * 0.25, torch.tensor(0.25), 4, 1.0).unique(), torch.arange(-8.0, 8.0) * 0.25)
    assert lsq_initial_step(torch.tensor([1.0, -3.0]), 4).item() == pytest.approx(2 * 2.0 / 2)
