"""MSE-optimal clipping: the clipping range whose quantisation error, weighted by the observed histogram, is least."""

from __future__ import annotations

import torch

from quantlib.observers.histogram import RunningHistogram


def mse_optimal_clip(histogram: RunningHistogram, n_levels: int, symmetric: bool, candidates: int = 100,
                     nearest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the (lo, hi) among ``candidates`` shrinkings of the observed range that minimises the expected squared
    error of a quantiser with ``n_levels`` levels over that range, flooring (or, with ``nearest``, rounding half up);
    ``symmetric`` forces lo = -hi and measures the signed grid a quantiser builds for it: levels -(n/2) .. n/2 - 1
    (n even) of step hi / (n/2 - 1), so that the largest level is hi (otherwise the grid spans [lo, hi] in n - 1
    steps)."""
    centres, counts = histogram.centres(), histogram.counts
    lo_full, hi_full = histogram.lo, histogram.hi
    if symmetric:
        bound = torch.maximum(lo_full.abs(), hi_full.abs())
        lo_full, hi_full = -bound, bound
    best_err = torch.full_like(lo_full, float("inf"))
    best_lo, best_hi = lo_full.clone(), hi_full.clone()
    for k in range(1, candidates + 1):
        f = k / candidates
        lo, hi = lo_full * f, hi_full * f
        if symmetric:
            top = n_levels - n_levels // 2 - 1
            eps = (hi / top).clamp_min(1e-30)
            scaled = centres / eps[:, None]
            q = torch.clamp(torch.floor(scaled + 0.5 if nearest else scaled), -(n_levels // 2), top) * eps[:, None]
        else:
            eps = ((hi - lo) / (n_levels - 1)).clamp_min(1e-30)
            clipped = torch.minimum(torch.maximum(centres, lo[:, None]), hi[:, None]) / eps[:, None]
            q = torch.floor(clipped + 0.5 if nearest else clipped) * eps[:, None]
        err = (counts * (centres - q) ** 2).sum(dim=1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, lo, best_lo)
        best_hi = torch.where(better, hi, best_hi)
    return best_lo, best_hi
