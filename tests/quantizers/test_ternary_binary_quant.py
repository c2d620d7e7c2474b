"""Tests for the ternary and binary weight quantisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import binary_quantize, ternary_quantize

# w shape, scale shape
SHAPES = [((6, 5), ()), ((4, 3, 2, 2), (4, 1, 1, 1)), ((2, 4, 3, 3), (1, 4, 1, 1))]


def np_ternary(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Reference ternary quantiser."""
    return s * np.floor(np.clip(w / s, -1, 1) + 0.5)


def np_binary(w: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Reference binary quantiser, sign(0) = +1."""
    return s * np.where(w >= 0, 1.0, -1.0)


def make_case(seed: int, w_shape: tuple[int, ...], s_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Power-of-two float32 scales and weights at 0, +-scale/2, +-scale, beyond, and random."""
    rng = np.random.default_rng(seed)
    s = np.asarray(2.0 ** rng.integers(-4, 3, size=s_shape), dtype=np.float32)
    units = rng.choice(np.array([0.0, 0.5, -0.5, 1.0, -1.0, 1.5, -2.0, 0.25, -0.75]), size=w_shape)
    units = np.where(rng.random(w_shape) < 0.3, rng.uniform(-2, 2, size=w_shape), units)
    return s, (units.astype(np.float32) * s).astype(np.float32)


@pytest.mark.parametrize(("quant", "reference"), [(ternary_quantize, np_ternary), (binary_quantize, np_binary)])
@pytest.mark.parametrize(("w_shape", "s_shape"), SHAPES)
def test_forward_exact(quant, reference, w_shape, s_shape) -> None:
    """The forward equals the float64 numpy reference exactly (power-of-two scales)."""
    s, w = make_case(len(w_shape) + len(s_shape), w_shape, s_shape)
    y = quant(torch.from_numpy(w), torch.from_numpy(s))
    np.testing.assert_array_equal(y.numpy(), reference(w.astype(np.float64), s.astype(np.float64)))


@pytest.mark.parametrize(("quant", "reference"), [(ternary_quantize, np_ternary), (binary_quantize, np_binary)])
def test_forward_close_for_other_scales(quant, reference) -> None:
    """With arbitrary per-channel scales the forward matches a float32 numpy reference."""
    rng = np.random.default_rng(40)
    s = rng.uniform(0.1, 0.9, size=(4, 1, 1, 1)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = quant(torch.from_numpy(w), torch.from_numpy(s))
    np.testing.assert_allclose(y.numpy(), reference(w, s), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("quant", [ternary_quantize, binary_quantize])
@pytest.mark.parametrize(("w_shape", "s_shape"), SHAPES)
def test_backward_is_masked_ste(quant, w_shape, s_shape) -> None:
    """dw = g * 1[|w| <= scale], and the scale gets no gradient."""
    s_np, w_np = make_case(41, w_shape, s_shape)
    g = np.random.default_rng(42).standard_normal(w_shape).astype(np.float32)
    w = torch.from_numpy(w_np).requires_grad_()
    scale = torch.from_numpy(s_np).requires_grad_()
    quant(w, scale).backward(torch.from_numpy(g))
    np.testing.assert_array_equal(w.grad.numpy(), g * (np.abs(w_np) <= s_np))
    assert scale.grad is None


def test_thresholds() -> None:
    """Ternary: scale/2 rounds up, -scale/2 to zero; binary: sign(0) = +1."""
    w, s = torch.tensor([-0.5, -0.49, 0.0, 0.49, 0.5, 3.0]), torch.tensor(1.0)
    assert ternary_quantize(w, s).tolist() == [0.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert binary_quantize(w, s).tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0, 1.0]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-16, 16, width=32), min_size=1, max_size=32), exp=st.integers(-4, 4))
def test_outputs_in_level_set_and_idempotent(values: list[float], exp: int) -> None:
    """Ternary outputs lie in {-s, 0, s}, binary outputs in {-s, s}; both are idempotent."""
    s = torch.tensor(2.0**exp)
    w = torch.tensor(values)
    t = ternary_quantize(w, s)
    b = binary_quantize(w, s)
    assert set((t / s).tolist()) <= {-1.0, 0.0, 1.0}
    assert set((b / s).tolist()) <= {-1.0, 1.0}
    assert torch.equal(ternary_quantize(t, s), t) and torch.equal(binary_quantize(b, s), b)
