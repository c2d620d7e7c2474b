"""Statistics collected during calibration (min / max / mean / variance, histograms) and clipping initialisation."""

from quantlib.observers.histogram import RunningHistogram
from quantlib.observers.mse_clipping import mse_optimal_clip
from quantlib.observers.running_statistics import RunningStatistics
from quantlib.observers.tensor_observer import TensorObserver

__all__ = ["RunningHistogram", "RunningStatistics", "TensorObserver", "mse_optimal_clip"]
