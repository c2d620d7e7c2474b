"""CIFAR-10 from a user-given ``cifar-10-batches-py`` folder (the standard Python version: ``data_batch_1`` ..
``data_batch_5`` and ``test_batch``, each a pickled dict with ``data`` [N, 3072] uint8 and ``labels``).

The batches are pickles, and unpickling may run code; they are read with an unpickler that only rebuilds numpy
arrays (``cifar_files``, shared with CIFAR-100), so a tampered file fails instead of running anything.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

from quantlib.data.cifar_files import CifarFormat, cifar_datasets, cifar_folder, cifar_loaders, read_cifar_file
from quantlib.data.errors import CifarError

__all__ = ["CIFAR10", "MEAN", "STD", "TEST_FILE", "TRAIN_FILES", "CifarError", "cifar10_loaders", "load_cifar10",
           "read_batch"]

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
CIFAR10 = CifarFormat("CIFAR-10", "batch", "cifar-10-batches-py", "data_batch_1..5, test_batch", "labels", 10,
                      MEAN, STD)


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, 32, 32] uint8 and labels [N] of one batch file."""
    return read_cifar_file(path, CIFAR10)


def load_cifar10(path: str | os.PathLike) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) datasets of normalised images [3, 32, 32] and labels from the folder ``path``."""
    folder = cifar_folder(path, CIFAR10)
    return cifar_datasets([read_batch(folder / name) for name in TRAIN_FILES], read_batch(folder / TEST_FILE), CIFAR10)


def cifar10_loaders(path: str | os.PathLike, batch_size: int = 128, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled training (random crops with 4-pixel padding and horizontal flips) and ordered test loaders."""
    return cifar_loaders(*load_cifar10(path), batch_size, seed)
