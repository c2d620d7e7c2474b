"""What a PTQ comparison measures: a model's logits on (a prefix of) a test loader, and top-k accuracy from them."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn


def collect_logits(model: nn.Module, loader: Iterable, max_batches: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N, C], labels [N]) of ``model`` on the first ``max_batches`` (input, label) batches of ``loader``
    (all when None), in eval mode without gradients; the training mode is restored."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for inputs, targets in itertools.islice(loader, max_batches):
            logits.append(model(inputs).float().numpy())
            labels.append(targets.numpy())
    model.train(was_training)
    if not logits:
        raise ValueError("The evaluation data gave no batch: give a test loader with at least one batch.")
    return np.concatenate(logits), np.concatenate(labels)


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The share (%) of samples whose label is among the ``k`` largest logits (ties broken by the lower class);
    ``k`` above the number of classes counts every sample."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return 100.0 * float((top == labels.reshape(-1, 1)).any(axis=1).mean())
