"""CIFAR-10 from a user-given ``cifar-10-batches-py`` folder (the standard Python version: ``data_batch_1`` ..
``data_batch_5`` and ``test_batch``, each a pickled dict with ``data`` [N, 3072] uint8 and ``labels``).

The batches are pickles, and unpickling may run code; they are read with an unpickler that only rebuilds numpy
arrays, so a tampered file fails instead of running anything.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}


class CifarError(ValueError):
    """A CIFAR-10 folder or batch file cannot be used."""


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR-10 batch holds numpy arrays only")
        return super().find_class(module, name)


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, 32, 32] uint8 and labels [N] of one batch file."""
    try:
        with open(path, "rb") as f:
            batch = _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise CifarError(f"CIFAR-10 batch '{path}' is missing; the folder must be the extracted "
                         f"cifar-10-batches-py (data_batch_1..5, test_batch).") from exc
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise CifarError(f"CIFAR-10 batch '{path}' is not a readable cifar-10-batches-py file: {exc}.") from exc
    entries = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()} if isinstance(batch, dict) \
        else {}
    if "data" not in entries or "labels" not in entries:
        raise CifarError(f"CIFAR-10 batch '{path}' has no 'data' / 'labels' entries.")
    data = np.asarray(entries["data"], dtype=np.uint8)
    labels = np.asarray(entries["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise CifarError(f"CIFAR-10 batch '{path}' holds data of shape {data.shape} and {len(labels)} labels; "
                         f"expected [N, 3072] and N labels.")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.copy())


def _normalise(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).reshape(1, 3, 1, 1)
    std = torch.tensor(STD).reshape(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def load_cifar10(path: str | os.PathLike) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) datasets of normalised images [3, 32, 32] and labels from the folder ``path``."""
    folder = Path(path)
    if not folder.is_dir():
        raise CifarError(f"CIFAR-10 folder '{folder}' does not exist; pass the extracted cifar-10-batches-py folder.")
    train = [read_batch(folder / name) for name in TRAIN_FILES]
    test_images, test_labels = read_batch(folder / TEST_FILE)
    train_images = torch.cat([images for images, _ in train])
    train_labels = torch.cat([labels for _, labels in train])
    return (TensorDataset(_normalise(train_images), train_labels),
            TensorDataset(_normalise(test_images), test_labels))


def cifar10_loaders(path: str | os.PathLike, batch_size: int = 128, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled training (random crops with 4-pixel padding and horizontal flips) and ordered test loaders."""
    train, test = load_cifar10(path)
    return (DataLoader(_Augmented(train), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(test, batch_size=512))


class _Augmented(torch.utils.data.Dataset):
    """The standard CIFAR augmentation: pad by 4, random 32x32 crop, random horizontal flip."""

    def __init__(self, base: TensorDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.base[i]
        padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
        top, left = torch.randint(0, 9, (2,)).tolist()
        image = padded[:, top:top + 32, left:left + 32]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, label
