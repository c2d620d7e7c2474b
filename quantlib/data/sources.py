"""Data given on a command line: ``digits`` (bundled), ``cifar10:PATH`` (a cifar-10-batches-py folder),
``cifar100:PATH`` (a cifar-100-python folder), ``imagenet:PATH`` (an image folder: train/ and val/ of one sub-folder
per class, or class sub-folders directly), ``pamap2:PATH`` (PAMAP2's folder: 512-sample windows of 40 channels,
subject 105 left out), ``npz:PATH`` (arrays x, y) or ``random:N`` (N Gaussian batches of a given shape: calibration when
nothing better exists, no accuracy). ``DATASETS`` holds the named ones; a user registers more."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from quantlib.data.cifar10 import load_cifar10
from quantlib.data.cifar100 import load_cifar100
from quantlib.data.cifar_files import cifar_loaders
from quantlib.data.digits import digits_loaders
from quantlib.data.image_folder import image_folder_loaders
from quantlib.data.npz import npz_loaders
from quantlib.data.pamap2 import ACTIVITIES, pamap2_loaders
from quantlib.registry import Registry

DIGITS_SHAPE = (1, 8, 8)
CIFAR10_SHAPE = (3, 32, 32)
CIFAR100_SHAPE = (3, 32, 32)
IMAGENET_SHAPE = (3, 224, 224)


@dataclass(frozen=True)
class DataSource:
    """Training and test loaders of (input, label) batches (``test`` is None for random data), and ``calibration``:
    the training images as they are evaluated, without augmentation (default: ``train``, which has none)."""

    spec: str
    train: Iterable
    test: DataLoader | None
    input_shape: tuple[int, ...]
    num_classes: int
    calibration: Iterable | None = None

    @property
    def calibration_data(self) -> Iterable:
        """The batches to calibrate on: ``calibration``, else ``train``."""
        return self.calibration if self.calibration is not None else self.train

    def calibration_samples(self, n: int) -> list[torch.Tensor]:
        """The inputs of the first ``n`` calibration samples, in batches (the last one cut)."""
        batches, count = [], 0
        for batch in self.calibration_data:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            batches.append(inputs[:n - count])
            count += len(batches[-1])
            if count == n:
                break
        return batches

    def calibration_batches(self, n: int) -> list[torch.Tensor]:
        """The inputs of the first ``n`` calibration batches."""
        batches = []
        for batch in self.calibration_data:
            batches.append(batch[0] if isinstance(batch, (tuple, list)) else batch)
            if len(batches) == n:
                break
        return batches


def _digits(path: str, batch_size: int) -> DataSource:
    train, test = digits_loaders(batch_size)
    return DataSource("digits", train, test, DIGITS_SHAPE, 10)


def _cifar(kind: str) -> Callable[[str, int], DataSource]:
    def load(path: str, batch_size: int) -> DataSource:
        datasets = load_cifar10(path) if kind == "cifar10" else load_cifar100(path)
        train, test = cifar_loaders(*datasets, batch_size, seed=0)
        calibration = DataLoader(datasets[0], batch_size=batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(0))  # the images without augmentation
        shape, classes = (CIFAR10_SHAPE, 10) if kind == "cifar10" else (CIFAR100_SHAPE, 100)
        return DataSource(f"{kind}:{path}", train, test, shape, classes, calibration)
    return load


def _imagenet(path: str, batch_size: int) -> DataSource:
    train, test = image_folder_loaders(path, batch_size, crop=IMAGENET_SHAPE[-1])
    return DataSource(f"imagenet:{path}", train, test, IMAGENET_SHAPE, len(test.dataset.classes))


def _arrays(kind: str) -> Callable[[str, int], DataSource]:
    def load(path: str, batch_size: int) -> DataSource:
        train, test = pamap2_loaders(path, batch_size) if kind == "pamap2" else npz_loaders(path, batch_size)
        shape = tuple(train.dataset.tensors[0].shape[1:])
        classes = len(ACTIVITIES) if kind == "pamap2" else int(train.dataset.tensors[1].max()) + 1
        return DataSource(f"{kind}:{path}", train, test, shape, classes)
    return load


@dataclass(frozen=True)
class Dataset:
    """A named data set: ``load(path, batch_size)``; ``path`` says what its path is ('' when it takes none)."""

    load: Callable[[str, int], DataSource]
    path: str = ""


DATASETS: Registry[Dataset] = Registry("data set", {
    "digits": Dataset(_digits),
    "cifar10": Dataset(_cifar("cifar10"), "a cifar-10-batches-py folder"),
    "cifar100": Dataset(_cifar("cifar100"), "a cifar-100-python folder"),
    "imagenet": Dataset(_imagenet, "an image folder: train/ and val/, or one sub-folder of images per class"),
    "pamap2": Dataset(_arrays("pamap2"), "the PAMAP2 folder"),
    "npz": Dataset(_arrays("npz"), "arrays x, y"),
})
"""The data sets ``data_source`` and configurations name; register another as ``Dataset(load, path_hint)``."""


def data_source(spec: str, input_shape: tuple[int, ...] | None = None, batch_size: int = 64) -> DataSource:
    """The data named by ``spec`` (``NAME`` or ``NAME:PATH`` of ``DATASETS``, or ``random:N``); ``input_shape`` is
    required for ``random:N``. ValueError names what is wrong."""
    kind, _, arg = spec.partition(":")
    if kind in DATASETS and bool(arg) == bool(DATASETS[kind].path):
        return DATASETS[kind].load(arg, batch_size)
    if kind == "random" and arg.isdecimal() and int(arg) > 0:
        if input_shape is None:
            raise ValueError(f"Data '{spec}' needs an input shape (--input-shape C,H,W, C,L or F).")
        g = torch.Generator().manual_seed(0)
        batches = [(torch.randn(batch_size, *input_shape, generator=g),) for _ in range(int(arg))]
        return DataSource(spec, batches, None, tuple(input_shape), 0)
    named = ", ".join(f"'{name}:PATH' ({entry.path})" if entry.path else f"'{name}'"
                      for name, entry in DATASETS.items())
    raise ValueError(f"Data '{spec}' is not one of {named} or 'random:N' (N random batches).")
