"""Shared test set-up: two threads, reproducible property tests, and a tiny CIFAR-10 in the standard
cifar-10-batches-py format."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from quantlib.data.cifar10 import TEST_FILE, TRAIN_FILES

torch.set_num_threads(2)
settings.register_profile("reproducible", derandomize=True, database=None)  # the same examples on every run
settings.load_profile("reproducible")


def write_fake_cifar10(folder: Path, per_batch: int = 20, seed: int = 0) -> Path:
    """Five training batches and a test batch of ``per_batch`` random images each; returns ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in (*TRAIN_FILES, TEST_FILE):
        batch = {b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, per_batch)], b"batch_label": name.encode()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    return folder


@pytest.fixture
def fake_cifar10(tmp_path) -> Path:
    return write_fake_cifar10(tmp_path / "cifar-10-batches-py")
