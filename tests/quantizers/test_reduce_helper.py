"""Tests for the gradient reduction helper shared by the quantisers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantlib.quantizers._reduce import _sum_to_shape


@pytest.mark.parametrize(
    ("grad_shape", "shape", "axes"),
    [
        ((2, 3, 4, 5), (), (0, 1, 2, 3)),
        ((2, 3, 4, 5), (2, 1, 1, 1), (1, 2, 3)),
        ((2, 3, 4, 5), (1, 3, 1, 1), (0, 2, 3)),
        ((2, 3, 4, 5), (3, 1, 1), (0, 2, 3)),
        ((2, 3, 4, 5), (1, 1, 1, 5), (0, 1, 2)),
        ((2, 3), (2, 3), ()),
    ],
)
def test_sum_to_shape_matches_numpy(grad_shape: tuple[int, ...], shape: tuple[int, ...],
                                    axes: tuple[int, ...]) -> None:
    """The reduced gradient equals the numpy sum over the broadcast axes, and has exactly the parameter's shape."""
    grad = np.random.default_rng(0).standard_normal(grad_shape)
    out = _sum_to_shape(torch.from_numpy(grad), shape)
    assert tuple(out.shape) == shape
    np.testing.assert_allclose(out.numpy(), grad.sum(axis=axes).reshape(shape), rtol=1e-12)


def test_sum_to_shape_rejects_larger_shape() -> None:
    """A target with more dimensions than the gradient is an error."""
    with pytest.raises(ValueError, match="larger shape"):
        _sum_to_shape(torch.ones(3), (1, 3))
