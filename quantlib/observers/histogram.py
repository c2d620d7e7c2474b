"""A running histogram per slice whose range grows with the data (for percentile and MSE clipping).

When a batch falls outside the current range, the counts are re-binned into the wider range (each old bin's count
moves to the new bin holding its centre), so memory stays fixed at ``bins`` counts per slice.
"""

from __future__ import annotations

import torch

from quantlib.observers.granularity import to_rows


class RunningHistogram:
    """Counts of the values of every row of ``to_rows(x, dims)`` in ``bins`` equal bins over [lo, hi]."""

    def __init__(self, dims: tuple[int, ...], bins: int = 2048) -> None:
        self.dims = dims
        self.bins = bins
        self.counts: torch.Tensor | None = None  # [C, bins], float64
        self.lo: torch.Tensor | None = None      # [C]
        self.hi: torch.Tensor | None = None      # [C]

    def update(self, x: torch.Tensor) -> None:
        """Add the values of batch ``x``."""
        rows = to_rows(x.detach(), self.dims).double()
        lo_b, hi_b = rows.amin(dim=1), rows.amax(dim=1)
        if self.counts is None:
            self.lo, self.hi = lo_b, torch.maximum(hi_b, lo_b + 1e-12)
            self.counts = torch.zeros(rows.shape[0], self.bins, dtype=torch.float64)
        else:
            lo, hi = torch.minimum(self.lo, lo_b), torch.maximum(self.hi, hi_b)
            if bool((lo < self.lo).any() or (hi > self.hi).any()):
                self.counts = self._rebin(self.centres(), self.counts, lo, hi)
                self.lo, self.hi = lo, hi
        self.counts += self._count(rows, self.lo, self.hi)

    def centres(self) -> torch.Tensor:
        """The centre of every bin, [C, bins]."""
        width = (self.hi - self.lo) / self.bins
        return self.lo[:, None] + width[:, None] * (torch.arange(self.bins, dtype=torch.float64) + 0.5)

    def quantile(self, q: float, upper: bool) -> torch.Tensor:
        """Per row, an edge of the first bin at which the cumulative fraction of values reaches ``q``: its upper edge
        (at least a fraction q lies below it) or its lower edge (at most a fraction q lies below it)."""
        cumulative = self.counts.cumsum(dim=1)
        target = q * cumulative[:, -1:]
        index = torch.searchsorted(cumulative, target).clamp(max=self.bins - 1).squeeze(1)
        width = (self.hi - self.lo) / self.bins
        return self.lo + width * (index + int(upper)).double()

    def _count(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, weights: torch.Tensor | None = None
               ) -> torch.Tensor:
        n_rows = rows.shape[0]
        index = ((rows - lo[:, None]) / (hi - lo)[:, None] * self.bins).floor().clamp(0, self.bins - 1).long()
        flat = index + torch.arange(n_rows)[:, None] * self.bins
        counts = torch.bincount(flat.flatten(), weights=None if weights is None else weights.flatten(),
                                minlength=n_rows * self.bins)
        return counts.double().reshape(n_rows, self.bins)

    def _rebin(self, centres: torch.Tensor, counts: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        return self._count(centres, lo, hi, weights=counts)
