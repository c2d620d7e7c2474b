"""Tests for PACT with two learned clipping bounds against numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from quantlib.quantizers import floor_quantize, pact_quantize

# x shape, clip_lo shape, clip_hi shape, axes summed for clip_lo, axes summed for clip_hi
CASES = [
    ((6, 5), (), (), (0, 1), (0, 1)),
    ((4, 3, 2, 2), (4, 1, 1, 1), (4, 1, 1, 1), (1, 2, 3), (1, 2, 3)),
    ((2, 4, 3, 3), (1, 4, 1, 1), (1, 4, 1, 1), (0, 2, 3), (0, 2, 3)),
    ((2, 4, 3, 3), (), (1, 4, 1, 1), (0, 1, 2, 3), (0, 2, 3)),
]
INT_BOUNDS = [(-8, 7), (0, 15), (-2, 1)]


def np_pact(x: np.ndarray, clip_lo: np.ndarray, clip_hi: np.ndarray, n_levels: int) -> np.ndarray:
    """Reference PACT forward."""
    eps = (clip_hi - clip_lo) / (n_levels - 1)
    return eps * np.floor(np.clip(x, clip_lo, clip_hi) / eps)


def pow2_eps_bounds(rng: np.random.Generator, lo_shape: tuple[int, ...], hi_shape: tuple[int, ...], lo: int,
                    hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Power-of-two eps with clip_lo = lo * eps and clip_hi = hi * eps (one eps for all channels if shapes differ)."""
    shape = lo_shape if lo_shape == hi_shape else ()
    eps = np.asarray(2.0 ** rng.integers(-4, 3, size=shape), dtype=np.float32)
    clip_lo = np.array(np.broadcast_to(lo * eps, lo_shape), dtype=np.float32)
    clip_hi = np.array(np.broadcast_to(hi * eps, hi_shape), dtype=np.float32)
    return eps, clip_lo, clip_hi


def grid_inputs(rng: np.random.Generator, shape: tuple[int, ...], eps: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """float32 values on levels and between them (including the clip bounds and beyond), plus random ones."""
    k = rng.integers(lo - 3, hi + 4, size=shape)
    frac = rng.choice(np.array([0.0, 0.0, 0.25, 0.5, 0.75]), size=shape)
    frac = np.where(rng.random(shape) < 0.3, rng.random(shape), frac)
    return ((k + frac).astype(np.float32) * eps).astype(np.float32)


@pytest.mark.parametrize(("x_shape", "lo_shape", "hi_shape", "lo_axes", "hi_axes"), CASES)
@pytest.mark.parametrize(("lo", "hi"), INT_BOUNDS)
def test_forward_exact_and_equal_to_floor_quantizer(x_shape, lo_shape, hi_shape, lo_axes, hi_axes, lo: int,
                                                    hi: int) -> None:
    """With clip bounds lo*eps, hi*eps and a power-of-two eps, PACT equals the reference and the floor quantiser."""
    rng = np.random.default_rng(lo + 10 * len(x_shape) + len(lo_shape))
    eps, clip_lo, clip_hi = pow2_eps_bounds(rng, lo_shape, hi_shape, lo, hi)
    x = grid_inputs(rng, x_shape, eps, lo, hi)
    y = pact_quantize(torch.from_numpy(x), torch.from_numpy(clip_lo), torch.from_numpy(clip_hi), hi - lo + 1)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(y.numpy(), np_pact(x64, clip_lo.astype(np.float64), clip_hi.astype(np.float64),
                                                     hi - lo + 1))
    eps64 = eps.astype(np.float64)
    np.testing.assert_array_equal(y.numpy(), eps64 * np.floor(np.clip(x64 / eps64, lo, hi)))
    np.testing.assert_array_equal(y.numpy(), floor_quantize(torch.from_numpy(x), torch.from_numpy(eps), lo, hi).numpy())


@pytest.mark.parametrize(("x_shape", "lo_shape", "hi_shape", "lo_axes", "hi_axes"), CASES)
def test_forward_close_for_arbitrary_bounds(x_shape, lo_shape, hi_shape, lo_axes, hi_axes) -> None:
    """With arbitrary clip bounds the forward matches a float32 numpy reference."""
    rng = np.random.default_rng(3)
    clip_lo = np.asarray(rng.uniform(-1.3, -0.2, size=lo_shape), dtype=np.float32)
    clip_hi = np.asarray(rng.uniform(0.4, 2.1, size=hi_shape), dtype=np.float32)
    x = (rng.standard_normal(x_shape) * 1.5).astype(np.float32)
    y = pact_quantize(torch.from_numpy(x), torch.from_numpy(clip_lo), torch.from_numpy(clip_hi), 16)
    np.testing.assert_allclose(y.numpy(), np_pact(x, clip_lo, clip_hi, 16), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("x_shape", "lo_shape", "hi_shape", "lo_axes", "hi_axes"), CASES)
@pytest.mark.parametrize(("lo", "hi"), INT_BOUNDS)
def test_backward_matches_pact_formula(x_shape, lo_shape, hi_shape, lo_axes, hi_axes, lo: int, hi: int) -> None:
    """dx = g*1[clip_lo < x < clip_hi]; dclip_hi = sum(g*1[x >= clip_hi]); dclip_lo = sum(g*1[x <= clip_lo])."""
    rng = np.random.default_rng(4)
    eps, clip_lo_np, clip_hi_np = pow2_eps_bounds(rng, lo_shape, hi_shape, lo, hi)
    x_np = grid_inputs(rng, x_shape, eps, lo, hi)
    g = rng.standard_normal(x_shape).astype(np.float32)
    x = torch.from_numpy(x_np).requires_grad_()
    clip_lo = torch.from_numpy(clip_lo_np).requires_grad_()
    clip_hi = torch.from_numpy(clip_hi_np).requires_grad_()
    pact_quantize(x, clip_lo, clip_hi, hi - lo + 1).backward(torch.from_numpy(g))
    np.testing.assert_array_equal(x.grad.numpy(), g * ((x_np > clip_lo_np) & (x_np < clip_hi_np)))
    g64 = g.astype(np.float64)
    d_lo = (g64 * (x_np <= clip_lo_np)).sum(axis=lo_axes).reshape(lo_shape)
    d_hi = (g64 * (x_np >= clip_hi_np)).sum(axis=hi_axes).reshape(hi_shape)
    assert clip_lo.grad.shape == clip_lo.shape and clip_hi.grad.shape == clip_hi.shape
    np.testing.assert_allclose(clip_lo.grad.numpy(), d_lo, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clip_hi.grad.numpy(), d_hi, rtol=1e-5, atol=1e-5)


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(-64, 64, width=32), min_size=1, max_size=32), exp=st.integers(-4, 4),
       lo=st.integers(-8, 0), width=st.integers(1, 8))
def test_outputs_on_grid_in_range_and_idempotent(values: list[float], exp: int, lo: int, width: int) -> None:
    """Outputs are multiples of eps in [clip_lo, clip_hi], equal to the floor quantiser, and PACT is idempotent."""
    hi = lo + width
    eps = torch.tensor(2.0**exp)
    clip_lo, clip_hi = lo * eps, hi * eps
    x = torch.tensor(values)
    y = pact_quantize(x, clip_lo, clip_hi, width + 1)
    levels = (y / eps).numpy()
    np.testing.assert_array_equal(levels, np.round(levels))
    assert levels.min() >= lo and levels.max() <= hi
    assert torch.equal(y, floor_quantize(x, eps, lo, hi))
    assert torch.equal(pact_quantize(y, clip_lo, clip_hi, width + 1), y)
