"""Tests for the floor- and round-based uniform quantisers against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import floor_quantize, round_quantize

# x shape, scale shape (per-tensor, per-output-channel weights, per-channel activations)
SHAPES = [((5, 7), ()), ((4, 3, 2, 2), (4, 1, 1, 1)), ((2, 4, 3, 3), (1, 4, 1, 1))]
BOUNDS = [(-8, 7), (0, 15), (-1, 1)]


def np_floor(x: np.ndarray, s: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Reference floor quantiser."""
    return s * np.floor(np.clip(x / s, lo, hi))


def np_round(x: np.ndarray, s: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Reference round quantiser: half up, floor(x / s + 1/2), on x / s computed in the input's precision."""
    return (s * np.clip(np.floor((x / s).astype(np.float64) + 0.5), lo, hi)).astype(x.dtype)


def grid_inputs(rng: np.random.Generator, shape: tuple[int, ...], s: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """float32 values on levels, half-levels and quarter-levels (including lo, hi and beyond), plus random ones."""
    k = rng.integers(lo - 3, hi + 4, size=shape)
    frac = rng.choice(np.array([0.0, 0.0, 0.25, 0.5, 0.75, -0.5]), size=shape)
    frac = np.where(rng.random(shape) < 0.3, rng.random(shape), frac)
    return ((k + frac).astype(np.float32) * s).astype(np.float32)


def pow2_scale(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random power-of-two scales of the given shape."""
    return np.asarray(2.0 ** rng.integers(-4, 3, size=shape), dtype=np.float32)


@pytest.mark.parametrize(("quant", "reference"), [(floor_quantize, np_floor), (round_quantize, np_round)])
@pytest.mark.parametrize(("x_shape", "s_shape"), SHAPES)
@pytest.mark.parametrize(("lo", "hi"), BOUNDS)
def test_forward_exact_for_pow2_scales(quant, reference, x_shape, s_shape, lo: int, hi: int) -> None:
    """With power-of-two scales the float32 forward equals the float64 numpy reference exactly."""
    rng = np.random.default_rng(lo + 100 * len(x_shape))
    s = pow2_scale(rng, s_shape)
    x = grid_inputs(rng, x_shape, s, lo, hi)
    y = quant(torch.from_numpy(x), torch.from_numpy(s), lo, hi)
    np.testing.assert_array_equal(y.numpy().astype(np.float64), reference(x.astype(np.float64), s.astype(np.float64),
                                                                          lo, hi))


@pytest.mark.parametrize(("quant", "reference"), [(floor_quantize, np_floor), (round_quantize, np_round)])
@pytest.mark.parametrize(("x_shape", "s_shape"), SHAPES)
def test_forward_close_for_other_scales(quant, reference, x_shape, s_shape) -> None:
    """With arbitrary scales the forward matches a float32 numpy reference."""
    rng = np.random.default_rng(1)
    s = np.asarray(rng.uniform(0.05, 0.9, size=s_shape), dtype=np.float32)
    x = (rng.standard_normal(x_shape) * 4).astype(np.float32)
    y = quant(torch.from_numpy(x), torch.from_numpy(s), -8, 7)
    np.testing.assert_allclose(y.numpy(), reference(x, s, -8, 7), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("quant", [floor_quantize, round_quantize])
@pytest.mark.parametrize(("x_shape", "s_shape"), SHAPES)
@pytest.mark.parametrize(("lo", "hi"), BOUNDS)
def test_backward_is_masked_ste(quant, x_shape, s_shape, lo: int, hi: int) -> None:
    """dx = g * 1[lo < x/scale < hi], and the scale gets no gradient."""
    rng = np.random.default_rng(2)
    s = pow2_scale(rng, s_shape)
    x_np = grid_inputs(rng, x_shape, s, lo, hi)
    g = rng.standard_normal(x_shape).astype(np.float32)
    x = torch.from_numpy(x_np).requires_grad_()
    scale = torch.from_numpy(s).requires_grad_()
    quant(x, scale, lo, hi).backward(torch.from_numpy(g))
    z = x_np / s
    np.testing.assert_array_equal(x.grad.numpy(), g * ((z > lo) & (z < hi)))
    assert scale.grad is None


def test_floor_is_not_round() -> None:
    """The floor quantiser maps 0.75 * scale to 0, the round quantiser to 1 * scale."""
    x, s = torch.tensor([0.75, -0.25]), torch.tensor(1.0)
    assert floor_quantize(x, s, -2, 2).tolist() == [0.0, -1.0]
    assert round_quantize(x, s, -2, 2).tolist() == [1.0, -0.0]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-64, 64, width=32), min_size=1, max_size=32), exp=st.integers(-4, 4),
       lo=st.integers(-8, 0), width=st.integers(1, 8), use_floor=st.booleans())
def test_outputs_on_grid_in_range_and_idempotent(values: list[float], exp: int, lo: int, width: int,
                                                 use_floor: bool) -> None:
    """Outputs are integer multiples of the scale within [lo*scale, hi*scale], and quantising them again is a no-op."""
    quant = floor_quantize if use_floor else round_quantize
    hi = lo + width
    s = torch.tensor(2.0**exp)
    y = quant(torch.tensor(values), s, lo, hi)
    levels = (y / s).numpy()
    np.testing.assert_array_equal(levels, np.round(levels))
    assert levels.min() >= lo and levels.max() <= hi
    assert torch.equal(quant(y, s, lo, hi), y)
