"""The training methods of a switchable model, as losses for the shared training loop (``quantlib.training.fit``
takes ``loss(model, inputs, targets) -> (loss, logits)`` and makes one backward pass and one optimiser step per
batch):

- ``JointQuantisation``: ``passes`` forward passes per batch, each with an independent random configuration (every
  layer its own bit-width), their cross-entropies averaged.
- ``SinglePrecision``: every layer at one bit-width (``vanilla_single_precision_training``).
- ``RecursiveDistillation``: the highest configuration learns from the labels, and ``passes`` random ones from its
  softmax (Any-Precision DNNs), all averaged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.distributed import unwrap
from quantlib.mixed_precision.configurations import set_random_bitwidths, set_uniform_bitwidth

TRAINING_METHODS = ("joint_quantization", "vanilla_single_precision_training", "recursive_distillation")


class JointQuantisation:
    """The average cross-entropy of ``passes`` random configurations; the logits returned are the last pass's.
    ``generator`` draws the configurations (seed it alike on every rank, so that all ranks train the same ones)."""

    def __init__(self, options: Sequence[int], passes: int, generator: torch.Generator | None = None) -> None:
        if passes < 1:
            raise ValueError(f"joint_quantization_batch_size={passes} must be >= 1.")
        self.options, self.passes, self.generator = tuple(options), passes, generator

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        total, logits = 0.0, None
        for _ in range(self.passes):
            set_random_bitwidths(unwrap(model), self.options, self.generator)
            logits = model(inputs)
            total = total + F.cross_entropy(logits, targets)
        return total / self.passes, logits


class SinglePrecision:
    """Cross-entropy with every layer at ``bits``."""

    def __init__(self, bits: int) -> None:
        self.bits = bits

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        set_uniform_bitwidth(unwrap(model), self.bits)
        logits = model(inputs)
        return F.cross_entropy(logits, targets), logits


class RecursiveDistillation:
    """``(CE(top, labels) + sum_i KL(softmax(top) || softmax(config_i))) / (1 + passes)``: the highest bit-width
    configuration ``top`` learns from the labels, each of ``passes`` random configurations from ``top``'s softmax
    (detached); the logits returned are ``top``'s."""

    def __init__(self, options: Sequence[int], passes: int, generator: torch.Generator | None = None) -> None:
        if passes < 1:
            raise ValueError(f"joint_quantization_batch_size={passes} must be >= 1.")
        self.options, self.passes, self.generator = tuple(options), passes, generator

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        set_uniform_bitwidth(unwrap(model), max(self.options))
        top = model(inputs)
        teacher = F.softmax(top.detach(), dim=1)
        total = F.cross_entropy(top, targets)
        for _ in range(self.passes):
            set_random_bitwidths(unwrap(model), self.options, self.generator)
            total = total + F.kl_div(F.log_softmax(model(inputs), dim=1), teacher, reduction="batchmean")
        return total / (1 + self.passes), top
