"""What a quantised module collects during calibration, and how its clipping bounds are initialised from it."""

from __future__ import annotations

import torch

from quantlib.errors import CalibrationError
from quantlib.observers.granularity import broadcast_shape
from quantlib.observers.histogram import RunningHistogram
from quantlib.observers.mse_clipping import mse_optimal_clip
from quantlib.observers.running_statistics import RunningStatistics
from quantlib.specs import QHParamsInitStrategy, QRange

HISTOGRAM_STRATEGIES = ("percentile", "mse")


class TensorObserver:
    """Running statistics (and a histogram when the strategy needs one) of the tensors a module quantises.

    ``owner`` names the module in every error: NaN / Inf in the data, or no data at all when bounds are asked for.
    """

    def __init__(self, dims: tuple[int, ...], strategy: QHParamsInitStrategy, owner: str) -> None:
        self.dims = dims
        self.strategy = strategy
        self.owner = owner
        self.statistics = RunningStatistics(dims, moments=strategy.name == "meanstd")
        self.histogram = RunningHistogram(dims) if strategy.name in HISTOGRAM_STRATEGIES else None
        self.shape: tuple[int, ...] | None = None  # broadcastable shape of the per-slice bounds

    def update(self, x: torch.Tensor) -> None:
        """Observe one batch; raises CalibrationError naming the module if it holds NaN or Inf."""
        if not all(bool(torch.isfinite(m)) for m in torch.aminmax(x.detach())):  # NaN and Inf reach min or max
            bad = "NaN" if bool(torch.isnan(x).any()) else "Inf"
            raise CalibrationError(f"Module '{self.owner}' observed {bad} values during calibration; check the model's "
                                   f"inputs and the layers before '{self.owner}' (a diverged float model, a bad "
                                   f"normalisation of the data).")
        self.shape = broadcast_shape(x, self.dims)
        self.statistics.update(x)
        if self.histogram is not None:
            self.histogram.update(x)

    def clip_bounds(self, qrange: QRange, nearest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """The float range [a, b] per slice that the strategy picks, shaped to broadcast against the observed data;
        ``nearest``: the quantiser rounds to nearest (else it floors), which the 'mse' strategy measures."""
        s = self.strategy
        if s.name == "const":
            shape = self.shape or ()
            return torch.full(shape, float(s.params["a"])), torch.full(shape, float(s.params["b"]))
        if self.statistics.count == 0:
            raise CalibrationError(f"Module '{self.owner}' observed no data, so its quantisation parameters cannot be "
                                   f"initialised with '{s.name}'. Run calibration batches through the model (with "
                                   f"observers switched on) before initialising, or use the 'const' strategy.")
        stats = self.statistics
        if s.name == "minmax":
            a, b = stats.min, stats.max
        elif s.name == "meanstd":
            a = torch.maximum(stats.mean - s.params["n_std"] * stats.std, stats.min)
            b = torch.minimum(stats.mean + s.params["n_std"] * stats.std, stats.max)
        elif s.name == "percentile":
            q = s.params["q"] / 100.0
            a = torch.maximum(self.histogram.quantile(1.0 - q, upper=False), stats.min)
            b = torch.minimum(self.histogram.quantile(q, upper=True), stats.max)
        else:  # mse
            a, b = mse_optimal_clip(self.histogram, qrange.n_levels, symmetric=qrange.is_signed, nearest=nearest)
        return a.float().reshape(self.shape), b.float().reshape(self.shape)
