"""Plain training and evaluation loops shared by the examples, the demo, benchmarks and tests."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from tqdm import tqdm


def train_epochs(model: nn.Module, loader: Iterable, epochs: int, lr: float, *, progress: bool = False) -> nn.Module:
    """Train ``model`` with Adam and cross-entropy for ``epochs`` passes over ``loader``; returns it in eval mode."""
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(1, epochs))
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
        for x, y in loader:
            optimiser.zero_grad()
            loss_fn(model(x), y).backward()
            optimiser.step()
        scheduler.step()
    return model.eval()


def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in percent (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += len(y)
    model.train(was_training)
    return 100.0 * correct / total
