"""What CIFAR-10 and CIFAR-100 share: the pickled files of their Python versions (a dict with bytes keys, ``data``
[N, 3072] uint8 and a list of labels), read with an unpickler that only rebuilds numpy arrays, so a tampered file
fails instead of running code; the normalisation; and the standard pad-crop-flip training augmentation."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from quantlib.data.errors import CifarError

_ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}
TEST_BATCH_SIZE = 512


@dataclass(frozen=True)
class CifarFormat:
    """One CIFAR release: how its messages name it, where its labels are, and its per-channel mean and std."""

    name: str  # "CIFAR-10"
    unit: str  # what one file is called in messages: "batch", "file"
    folder: str  # the extracted folder's name: "cifar-10-batches-py"
    files: str  # the files it holds, for messages: "data_batch_1..5, test_batch"
    labels_key: str
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR file holds numpy arrays only")
        return super().find_class(module, name)


def read_cifar_file(path: Path, fmt: CifarFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, 3, 32, 32] uint8 and labels [N] of one pickled file of ``fmt``; CifarError says what is wrong."""
    what = f"{fmt.name} {fmt.unit} '{path}'"
    try:
        with open(path, "rb") as f:
            content = _ArraysOnly(f, encoding="bytes").load()
    except FileNotFoundError as exc:
        raise CifarError(f"{what} is missing; the folder must be the extracted {fmt.folder} ({fmt.files}).") from exc
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise CifarError(f"{what} is not a readable {fmt.folder} file: {exc}.") from exc
    entries = {k.decode() if isinstance(k, bytes) else k: v for k, v in content.items()} \
        if isinstance(content, dict) else {}
    if "data" not in entries or fmt.labels_key not in entries:
        raise CifarError(f"{what} has no 'data' / '{fmt.labels_key}' entries.")
    try:
        data = np.asarray(entries["data"], dtype=np.uint8)
        labels = np.asarray(entries[fmt.labels_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise CifarError(f"{what} holds 'data' / '{fmt.labels_key}' that are not arrays of integers: {exc}.") from exc
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise CifarError(f"{what} holds data of shape {data.shape} and {len(labels)} labels; "
                         f"expected [N, 3072] and N labels.")
    if len(labels) and (labels.min() < 0 or labels.max() >= fmt.num_classes):
        raise CifarError(f"{what} holds labels from {labels.min()} to {labels.max()}; "
                         f"expected 0..{fmt.num_classes - 1}.")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels.copy())


def cifar_folder(path: str | os.PathLike, fmt: CifarFormat) -> Path:
    """``path`` as a Path, after checking that it is a folder."""
    folder = Path(path)
    if not folder.is_dir():
        raise CifarError(f"{fmt.name} folder '{folder}' does not exist; pass the extracted {fmt.folder} folder.")
    return folder


def normalise(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images [N, C, H, W] as floats in [0, 1], each channel less ``mean`` and divided by ``std``."""
    shape = (1, len(mean), 1, 1)
    return (images.float() / 255.0 - torch.tensor(mean).reshape(shape)) / torch.tensor(std).reshape(shape)


def cifar_datasets(train: list[tuple[torch.Tensor, torch.Tensor]], test: tuple[torch.Tensor, torch.Tensor],
                   fmt: CifarFormat) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) datasets of normalised images from the (images, labels) read from the training and test files."""
    train_images = torch.cat([images for images, _ in train])
    train_labels = torch.cat([labels for _, labels in train])
    return (TensorDataset(normalise(train_images, fmt.mean, fmt.std), train_labels),
            TensorDataset(normalise(test[0], fmt.mean, fmt.std), test[1]))


def cifar_loaders(train: TensorDataset, test: TensorDataset, batch_size: int,
                  seed: int) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader with ``PadCropFlip`` augmentation (order set by ``seed``) and ordered test loader."""
    return (DataLoader(PadCropFlip(train), batch_size=batch_size, shuffle=True,
                       generator=torch.Generator().manual_seed(seed)),
            DataLoader(test, batch_size=TEST_BATCH_SIZE))


class PadCropFlip(Dataset):
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
