"""The training methods of a switchable model, for the shared training loop: each gives the module to train and its
loss (``quantlib.training.fit(module, loader, config, loss=loss)``, which makes one backward pass and one optimiser
step per batch).

- ``joint_quantization``: ``passes`` forward passes per batch, each with an independent random configuration (every
  layer its own bit-width), their cross-entropies averaged.
- ``single_precision`` (``vanilla_single_precision_training``): every layer at one bit-width, plain cross-entropy.
- ``recursive_distillation``: the highest configuration learns from the labels and ``passes`` random ones from its
  softmax (Any-Precision DNNs), all averaged.

The passes run inside one ``MultiPass.forward``, so that under torchrun DistributedDataParallel sees one forward and
one backward per step (it cannot take several forwards before a backward).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from quantlib.mixed_precision.configurations import set_random_bitwidths, set_uniform_bitwidth, switchable_layers
from quantlib.training import Loss, cross_entropy_loss

TRAINING_METHODS = ("joint_quantization", "vanilla_single_precision_training", "recursive_distillation")


class MultiPass(nn.Module):
    """In training, ``passes`` forward passes of ``model``, ``configure(model, i)`` before pass i, their logits
    stacked [passes, N, classes]; in evaluation, ``model`` as it is configured (by the last pass, unless set: use
    the validation functions, which set each configuration they evaluate)."""

    def __init__(self, model: nn.Module, configure: Callable[[nn.Module, int], None], passes: int) -> None:
        super().__init__()
        self.model, self.configure, self.passes = model, configure, passes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.model(x)
        outputs = []
        for i in range(self.passes):
            self.configure(self.model, i)
            outputs.append(self.model(x))
        return torch.stack(outputs)


def _average_cross_entropy(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    logits = module(inputs)
    losses = [F.cross_entropy(pass_logits, targets) for pass_logits in logits]
    return sum(losses) / len(losses), logits[-1]


def _distillation(module: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    top, *lower = module(inputs)
    teacher = F.softmax(top.detach(), dim=1)
    total = F.cross_entropy(top, targets)
    for logits in lower:
        total = total + F.kl_div(F.log_softmax(logits, dim=1), teacher, reduction="batchmean")
    return total / (1 + len(lower)), top


def joint_quantization(model: nn.Module, options: Sequence[int], passes: int,
                       generator: torch.Generator | None = None) -> tuple[nn.Module, Loss]:
    """(module, loss): the average cross-entropy of ``passes`` random configurations per batch; the logits logged
    are the last pass's. Seed ``generator`` alike on every rank, so that the ranks train the same configurations."""
    _check_passes(passes)
    module = MultiPass(model, lambda m, _: set_random_bitwidths(m, options, generator), passes)
    return module, _average_cross_entropy


def single_precision(model: nn.Module, bits: int) -> tuple[nn.Module, Loss]:
    """(model at ``bits`` everywhere, cross-entropy)."""
    set_uniform_bitwidth(model, bits)
    return model, cross_entropy_loss


def recursive_distillation(model: nn.Module, options: Sequence[int], passes: int,
                           generator: torch.Generator | None = None) -> tuple[nn.Module, Loss]:
    """(module, loss): ``(CE(top, labels) + sum_i KL(softmax(top) || softmax(config_i))) / (1 + passes)``, ``top``
    every layer at its highest option, each ``config_i`` random; the logits logged are ``top``'s."""
    _check_passes(passes)

    def configure(m: nn.Module, i: int) -> None:
        if i == 0:
            for layer in switchable_layers(m).values():
                layer.set_bits(layer.options[-1])
        else:
            set_random_bitwidths(m, options, generator)
    return MultiPass(model, configure, passes + 1), _distillation


def _check_passes(passes: int) -> None:
    if not isinstance(passes, int) or passes < 1:
        raise ValueError(f"joint_quantization_batch_size={passes!r} must be an integer >= 1.")
