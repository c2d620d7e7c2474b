"""CIFAR-100 from a user-given ``cifar-100-python`` folder (the standard Python version: ``train`` and ``test``, each
a pickled dict with ``data`` [N, 3072] uint8, ``fine_labels`` (100 classes, used) and ``coarse_labels`` (ignored)).

Read like CIFAR-10 (``cifar_files``): an unpickler that only rebuilds numpy arrays, so a tampered file fails instead
of running anything.
"""

from __future__ import annotations

import os

from torch.utils.data import DataLoader, TensorDataset

from quantlib.data.cifar_files import CifarFormat, cifar_datasets, cifar_folder, cifar_loaders, read_cifar_file

__all__ = ["CIFAR100", "MEAN", "STD", "TEST_FILE", "TRAIN_FILE", "cifar100_loaders", "load_cifar100"]

TRAIN_FILE = "train"
TEST_FILE = "test"
MEAN = (0.5071, 0.4865, 0.4409)
STD = (0.2673, 0.2564, 0.2762)
CIFAR100 = CifarFormat("CIFAR-100", "file", "cifar-100-python", "train, test", "fine_labels", 100, MEAN, STD)


def load_cifar100(path: str | os.PathLike) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) datasets of normalised images [3, 32, 32] and fine labels (0..99) from the folder ``path``."""
    folder = cifar_folder(path, CIFAR100)
    train = read_cifar_file(folder / TRAIN_FILE, CIFAR100)
    return cifar_datasets([train], read_cifar_file(folder / TEST_FILE, CIFAR100), CIFAR100)


def cifar100_loaders(path: str | os.PathLike, batch_size: int = 128, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled training (random crops with 4-pixel padding and horizontal flips) and ordered test loaders."""
    return cifar_loaders(*load_cifar100(path), batch_size, seed)
