"""Validating a switchable model: ``random_bitwidths`` (K random configurations, their spread and each one listed),
``simple_validation`` (one bit-width everywhere) and ``uniform_table`` (every uniform bit-width); with BatchNorm mode
``recalibrate`` each configuration's statistics are re-estimated first (``recalibrate_batchnorm``)."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice

import torch
from torch import nn

from quantlib.mixed_precision.configurations import (
    BitwidthConfig,
    bitwidth_config,
    set_random_bitwidths,
    set_uniform_bitwidth,
)
from quantlib.mixed_precision.layers import SwitchableBatchNorm
from quantlib.training import evaluate

VALIDATION_FUNCTIONS = ("random_bitwidths", "simple_validation")


def recalibrate_batchnorm(model: nn.Module, loader: Iterable, batches: int) -> None:
    """Re-estimate the running statistics of every BatchNorm the current configuration uses (of a switchable one,
    the current bit-width's; the others keep theirs): reset, then the exact average over ``batches`` training
    batches (momentum None), without gradients; the training mode is restored."""
    inside = {id(n) for m in model.modules() if isinstance(m, SwitchableBatchNorm) for n in m.norms.values()}
    norms = [m.current() for m in model.modules() if isinstance(m, SwitchableBatchNorm)] + \
        [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in inside]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    device = next(model.parameters()).device
    with torch.no_grad():
        for inputs, _ in islice(loader, batches):
            model(inputs.to(device))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.train(was_training)


@dataclass(frozen=True)
class Evaluation:
    """One configuration's accuracy (%) and mean loss."""

    configuration: BitwidthConfig
    accuracy: float
    loss: float


@dataclass(frozen=True)
class Spread:
    """Accuracy and loss over several configurations: mean, min, max, population std, and each evaluation."""

    evaluations: list[Evaluation] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        acc = [e.accuracy for e in self.evaluations]
        loss = [e.loss for e in self.evaluations]
        return {"accuracy_mean": statistics.fmean(acc), "accuracy_min": min(acc), "accuracy_max": max(acc),
                "accuracy_std": statistics.pstdev(acc), "loss_mean": statistics.fmean(loss), "loss_min": min(loss),
                "loss_max": max(loss), "loss_std": statistics.pstdev(loss)}


def _evaluate(model: nn.Module, loader: Iterable, recalibration: tuple[Iterable, int] | None) -> Evaluation:
    if recalibration is not None:
        recalibrate_batchnorm(model, *recalibration)
    accuracy, loss = evaluate(model, loader)
    return Evaluation(bitwidth_config(model), accuracy, loss)


def random_bitwidths(model: nn.Module, loader: Iterable, options: Sequence[int], num_bitwidths: int,
                     generator: torch.Generator | None = None,
                     recalibration: tuple[Iterable, int] | None = None) -> Spread:
    """``num_bitwidths`` random configurations (each layer independently), each evaluated on ``loader``;
    ``recalibration`` = (training loader, batches) re-estimates BatchNorm statistics for each first."""
    if num_bitwidths < 1:
        raise ValueError(f"random_bitwidths: num_bitwidths={num_bitwidths} must be >= 1.")
    evaluations = []
    for _ in range(num_bitwidths):
        set_random_bitwidths(model, options, generator)
        evaluations.append(_evaluate(model, loader, recalibration))
    return Spread(evaluations)


def simple_validation(model: nn.Module, loader: Iterable, bits: int,
                      recalibration: tuple[Iterable, int] | None = None) -> Evaluation:
    """Every layer at ``bits``, evaluated on ``loader``."""
    set_uniform_bitwidth(model, bits)
    return _evaluate(model, loader, recalibration)


def uniform_table(model: nn.Module, loader: Iterable, options: Sequence[int],
                  recalibration: tuple[Iterable, int] | None = None) -> dict[int, Evaluation]:
    """``simple_validation`` at every option, by bit-width."""
    return {k: simple_validation(model, loader, k, recalibration) for k in sorted(options)}
