"""The bundled default data set: scikit-learn's 8x8 handwritten digits (1797 images), as tensors in [0, 1]."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset


def load_digits_tensors(test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) datasets of (image [1, 8, 8] in [0, 1], label), split reproducibly by ``seed``."""
    from sklearn.datasets import load_digits  # scikit-learn ships the images inside its package

    bunch = load_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return TensorDataset(images[train], labels[train]), TensorDataset(images[test], labels[test])


def digits_loaders(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled training and ordered test loaders over the digits split of ``load_digits_tensors``."""
    train, test = load_digits_tensors(seed=seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(test, batch_size=256))
