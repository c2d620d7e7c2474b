"""Tests for the DoReFa weight and activation quantisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import dorefa_activations, dorefa_weights

BITS = [1, 2, 4, 8]
TANH_BITS = [2, 4, 8]  # k = 1 is the paper's sign(w) * mean|w|


def np_dorefa_weights(w: np.ndarray, k: int) -> np.ndarray:
    """Reference DoReFa weights in float64."""
    n = 2**k - 1
    t = np.tanh(w)
    u = t / (2 * np.abs(t).max()) + 0.5
    return 2 * (np.round(n * u) / n) - 1


@pytest.mark.parametrize("k", TANH_BITS)
@pytest.mark.parametrize("shape", [(7,), (4, 3, 3, 3)])
def test_weights_forward(k: int, shape: tuple[int, ...]) -> None:
    """The forward matches the float64 numpy reference, and the largest |w| maps to +-1 exactly."""
    w = (np.random.default_rng(k).standard_normal(shape) * 0.7).astype(np.float32)
    y = dorefa_weights(torch.from_numpy(w), k).numpy()
    np.testing.assert_allclose(y, np_dorefa_weights(w.astype(np.float64), k), rtol=0, atol=1e-6)
    assert np.abs(y).max() == 1.0


def test_one_bit_weights_are_the_sign_times_the_mean_magnitude_with_a_straight_through_gradient() -> None:
    w = torch.tensor([0.5, -1.5, 0.0, 2.0], requires_grad=True)
    y = dorefa_weights(w, 1)
    assert y.tolist() == [1.0, -1.0, 1.0, 1.0]  # mean |w| = 1
    y.backward(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert w.grad.tolist() == [1.0, 2.0, 3.0, 4.0]


@pytest.mark.parametrize("k", TANH_BITS)
def test_weights_backward_is_autograd_with_identity_round(k: int) -> None:
    """The backward equals autograd of the same expression with round replaced by identity and max|tanh| detached."""
    rng = np.random.default_rng(20 + k)
    w_np = rng.standard_normal((5, 3, 2)).astype(np.float32)
    g = torch.from_numpy(rng.standard_normal((5, 3, 2)).astype(np.float32))
    w = torch.from_numpy(w_np).requires_grad_()
    dorefa_weights(w, k).backward(g)

    w_ref = torch.from_numpy(w_np).double().requires_grad_()
    n = 2**k - 1
    t = torch.tanh(w_ref)
    u = t / (2 * t.abs().max().detach()) + 0.5
    (2 * ((n * u) / n) - 1).backward(g.double())
    np.testing.assert_allclose(w.grad.numpy(), w_ref.grad.numpy(), rtol=1e-5, atol=1e-6)
    # the same gradient in closed form: g * (1 - tanh(w)^2) / max|tanh(w)|
    t_np = np.tanh(w_np.astype(np.float64))
    np.testing.assert_allclose(w.grad.numpy(), g.numpy() * (1 - t_np**2) / np.abs(t_np).max(), rtol=1e-5, atol=1e-6)


def test_all_zero_weights_are_finite() -> None:
    """All-zero weights (max|tanh| = 0) give finite outputs and gradients."""
    w = torch.zeros(4, requires_grad=True)
    y = dorefa_weights(w, 2)
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(w.grad).all()


@pytest.mark.parametrize("k", BITS)
@pytest.mark.parametrize("shape", [(11,), (2, 3, 4, 4)])
def test_activations_forward_and_backward(k: int, shape: tuple[int, ...]) -> None:
    """Forward equals round(n * clip(x, 0, 1)) / n (float32 numpy), backward g * 1[0 <= x <= 1]."""
    rng = np.random.default_rng(30 + k)
    n = 2**k - 1
    x_np = rng.uniform(-0.5, 1.5, size=shape).astype(np.float32)
    special = np.array([0.0, 1.0, -0.0, 0.5 / n, 1.5 / n, -1e-3, 1.001], dtype=np.float32)
    x_np.reshape(-1)[: special.size] = special
    g = rng.standard_normal(shape).astype(np.float32)
    x = torch.from_numpy(x_np).requires_grad_()
    y = dorefa_activations(x, k)
    y.backward(torch.from_numpy(g))
    expected = np.round(np.float32(n) * np.clip(x_np, np.float32(0), np.float32(1))) / np.float32(n)
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    np.testing.assert_array_equal(x.grad.numpy(), g * ((x_np >= 0) & (x_np <= 1)))


def test_32_bits_is_identity_and_bad_bits_rejected() -> None:
    """k = 32 returns the input itself; k < 1 is an error."""
    w = torch.randn(3)
    assert dorefa_weights(w, 32) is w and dorefa_activations(w, 32) is w
    with pytest.raises(ValueError, match="k >= 1"):
        dorefa_weights(w, 0)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-8, 8, width=32), min_size=1, max_size=32), k=st.integers(1, 8))
def test_outputs_on_grid(values: list[float], k: int) -> None:
    """Activations lie on {i / n} in [0, 1] and are idempotent; weights lie on {2i / n - 1} in [-1, 1]."""
    n = 2**k - 1
    x = torch.tensor(values)
    a = dorefa_activations(x, k)
    assert torch.equal(dorefa_activations(a, k), a)
    levels = a.numpy().astype(np.float64) * n
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-5)
    assert levels.min() >= 0 and levels.max() <= n
    if k == 1:
        binary = dorefa_weights(x, 1).numpy()
        np.testing.assert_allclose(np.abs(binary), np.abs(x.numpy()).mean(), rtol=1e-6)
        return
    w = dorefa_weights(x, k).numpy().astype(np.float64)
    assert np.abs(w).max() <= 1.0
    w_levels = (w + 1) / 2 * n
    np.testing.assert_allclose(w_levels, np.round(w_levels), atol=1e-5)
