"""LAPQ (Nahshan et al. 2019): loss-aware clipping. First, for each p in ``p_values``, every quantiser gets the clip
that minimises the p-norm of its own quantisation error (``PNormSearch``); the network's calibration loss is measured
at each p, a quadratic in p is fitted to those losses and every quantiser starts from the clips of the p that
minimises it. Then Powell's method searches all quantisers' scales jointly (one log-multiplier per quantiser), scored
by the calibration loss: cross-entropy when the calibration batches carry labels, else the mean squared error of the
logits against the float model's."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
import torch.fx as fx
import torch.nn.functional as F
from tqdm import tqdm

from quantlib.calibration import model_inputs
from quantlib.modules.qmodule import QModule
from quantlib.ptq.capture import float_mode
from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.scope import Scope, scope_tensors
from quantlib.scale_ties import harmonise_scales

CANDIDATES = 100
HISTOGRAM_BINS = 2048


@dataclass(frozen=True)
class LapqParams:
    """``p_values``: the p-norms swept for the initialisation; ``max_evaluations``: the budget of loss evaluations
    of the Powell search (each runs the model on the calibration data once); ``progress``: a bar over them."""

    p_values: tuple = (2.0, 2.5, 3.0, 3.5, 4.0)
    max_evaluations: int = 300
    progress: bool = False

    def check(self) -> str | None:
        if len(self.p_values) < 3 or any(not isinstance(p, (int, float)) or p <= 0 for p in self.p_values):
            return f"p_values={self.p_values} must hold at least 3 positive numbers (a quadratic is fitted to them)."
        if self.max_evaluations < 1:
            return f"max_evaluations={self.max_evaluations} must be >= 1."
        return None


@dataclass
class LapqTrace:
    """The calibration loss at each swept p, the chosen p, and the loss after the initialisation and after Powell."""

    p_losses: dict[float, float]
    p: float
    initial_loss: float
    final_loss: float


class PNormSearch:
    """The scale (per slice) among ``CANDIDATES`` shrinkings of a tensor's range whose quantisation error has the
    least p-norm. A slice of more than ``HISTOGRAM_BINS`` values is summarised once by a histogram of that many bins
    (errors measured at the bin centres, weighted by the counts), so that each p costs the same small sweep."""

    def __init__(self, quantiser: QModule, x: torch.Tensor) -> None:
        self.quantiser, self.qrange = quantiser, quantiser.spec.qrange
        dims = quantiser.spec.granularity.dims
        rows = x.detach().reshape(x.shape[0], -1) if dims else x.detach().reshape(1, -1)
        top = rows.abs().amax(dim=1) if self.qrange.is_signed else rows.clamp_min(0).amax(dim=1)
        self.top = torch.where(top > 0, top, torch.ones_like(top))
        if rows.shape[1] > HISTOGRAM_BINS:
            self.values, self.weights = _histograms(rows, self.top, self.qrange.is_signed)
        else:
            self.values, self.weights = rows, torch.ones_like(rows)

    def scale(self, p: float) -> torch.Tensor:
        """The least p-norm scale, shaped as the quantiser's."""
        qrange = self.qrange
        best_err = torch.full_like(self.top, float("inf"))
        best = self.top / qrange.max
        for k in range(1, CANDIDATES + 1):
            scale = (self.top * k / CANDIDATES / qrange.max)[:, None]
            q = torch.clamp(torch.floor(self.values / scale + 0.5), qrange.min, qrange.max) * scale
            err = (self.weights * (self.values - q).abs().pow(p)).sum(dim=1)
            better = err < best_err
            best_err, best = torch.where(better, err, best_err), torch.where(better, scale[:, 0], best)
        current = self.quantiser.scale.detach()
        return best.reshape(current.shape) if current.numel() == best.numel() else best[0]


def _histograms(rows: torch.Tensor, top: torch.Tensor, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the centres and counts of a ``HISTOGRAM_BINS``-bin histogram over [-top, top] (signed) or [0, top]."""
    centres, counts = [], []
    for row, t in zip(rows, top.tolist(), strict=True):
        lo = -t if signed else 0.0
        counts.append(torch.histc(row.clamp(lo, t), HISTOGRAM_BINS, lo, t))
        width = (t - lo) / HISTOGRAM_BINS
        centres.append(torch.linspace(lo + width / 2, t - width / 2, HISTOGRAM_BINS))
    return torch.stack(centres), torch.stack(counts)


class Lapq(PTQMethod):
    """p-norm initialisation, then a joint Powell search of every quantiser's scale; after ``quantize``, ``trace``
    holds the losses."""

    name = "lapq"
    symmetric_only = True
    Params = LapqParams

    def set_ranges(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        tensors = scope_tensors(gm, batches, scope)
        quantisers = list(tensors)
        searches = [PNormSearch(q, x) for q, x in tensors.items()]
        loss = calibration_loss(gm, batches)
        by_p = {float(p): [search.scale(float(p)) for search in searches] for p in self.params.p_values}
        p_losses = {}
        for p, scales in by_p.items():
            _set_scales(gm, quantisers, scales)
            p_losses[p] = loss()
        ps = np.array(list(p_losses))
        a, b, _ = np.polyfit(ps, np.array(list(p_losses.values())), 2)
        best_p = float(np.clip(-b / (2 * a), ps.min(), ps.max())) if a > 0 else min(p_losses, key=p_losses.get)
        start = [search.scale(best_p) for search in searches]
        _set_scales(gm, quantisers, start)
        initial = loss()

        bar = tqdm(total=self.params.max_evaluations, desc="lapq", disable=not self.params.progress, leave=False)

        def objective(log_multipliers: np.ndarray) -> float:
            _set_scales(gm, quantisers, [s * float(np.exp(m)) for s, m in zip(start, log_multipliers, strict=True)])
            bar.update()
            return loss()

        with bar:
            result = scipy.optimize.minimize(objective, np.zeros(len(quantisers)), method="Powell",
                                             options={"maxfev": self.params.max_evaluations, "xtol": 1e-3})
        final = objective(result.x) if result.fun <= initial else objective(np.zeros(len(quantisers)))
        self.trace = LapqTrace(p_losses, best_p, initial, final)

    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        """Nothing beyond the clips: weights round to nearest."""


def _set_scales(gm: fx.GraphModule, quantisers: list[QModule], scales: list[torch.Tensor]) -> None:
    for quantiser, scale in zip(quantisers, scales, strict=True):
        quantiser.set_scale(scale)
    harmonise_scales(gm)


def calibration_loss(gm: fx.GraphModule, batches: list) -> Callable[[], float]:
    """The loss LAPQ minimises, as a function of ``gm``'s current state: cross-entropy on labelled batches, else the
    mean squared error of the logits against the float model's (recorded once)."""
    inputs = [model_inputs(gm, batch) for batch in batches]
    labelled = all(isinstance(b, (tuple, list)) and len(b) > len(i) for b, i in zip(batches, inputs, strict=True))
    with torch.no_grad(), float_mode(gm):
        references = [batch[len(i)] for batch, i in zip(batches, inputs, strict=True)] if labelled else \
            [gm(*i) for i in inputs]

    def loss() -> float:
        was_training = gm.training
        gm.eval()
        with torch.no_grad():
            total = sum(float(F.cross_entropy(gm(*i), r) if labelled else F.mse_loss(gm(*i), r))
                        for i, r in zip(inputs, references, strict=True))
        gm.train(was_training)
        return total / len(inputs)

    return loss
