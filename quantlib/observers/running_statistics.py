"""Running minimum and maximum per slice and, when asked for, mean and variance, merged batch by batch (Chan et al.'s
parallel update, in float64, so that long calibrations neither drift nor overflow)."""

from __future__ import annotations

import torch

from quantlib.observers.granularity import to_rows


class RunningStatistics:
    """Statistics of every row of ``to_rows(x, dims)`` over all batches seen so far; mean and variance only with
    ``moments`` (they cost two more passes over every batch)."""

    def __init__(self, dims: tuple[int, ...], moments: bool = True) -> None:
        self.dims = dims
        self.moments = moments
        self.count = 0
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None
        self._m2: torch.Tensor | None = None  # sum of squared deviations from the mean

    def update(self, x: torch.Tensor) -> None:
        """Merge the statistics of batch ``x``."""
        rows = to_rows(x.detach(), self.dims)
        n_b = rows.shape[1]
        min_b, max_b = (m.double() for m in torch.aminmax(rows, dim=1))
        if self.count == 0:
            self.min, self.max = min_b, max_b
        else:
            if min_b.shape != self.min.shape:
                raise ValueError(f"Observed a batch with {min_b.numel()} slices after batches with {self.min.numel()}.")
            self.min = torch.minimum(self.min, min_b)
            self.max = torch.maximum(self.max, max_b)
        if self.moments:
            self._merge_moments(rows.double(), n_b)
        self.count += n_b

    def _merge_moments(self, rows: torch.Tensor, n_b: int) -> None:
        mean_b = rows.mean(dim=1)
        m2_b = ((rows - mean_b[:, None]) ** 2).sum(dim=1)
        if self.count == 0:
            self.mean, self._m2 = mean_b, m2_b
            return
        n_a = self.count
        delta = mean_b - self.mean
        total = n_a + n_b
        self.mean = self.mean + delta * (n_b / total)
        self._m2 = self._m2 + m2_b + delta ** 2 * (n_a * n_b / total)

    @property
    def var(self) -> torch.Tensor:
        """Population variance per row."""
        if not self.moments:
            raise ValueError("These statistics were collected without moments (RunningStatistics(dims, moments=True)).")
        return self._m2 / self.count

    @property
    def std(self) -> torch.Tensor:
        return self.var.sqrt()
