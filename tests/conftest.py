"""Shared test set-up: two threads, reproducible property tests, a tiny CIFAR-10 in the standard
cifar-10-batches-py format, a writer of fake PAMAP2 Protocol files, and a writer of edited YAML configurations."""

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
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


@pytest.fixture
def edited_yaml(tmp_path) -> Callable[[Path, Callable[[dict], object]], Path]:
    """``write(example, edit)``: the YAML file ``example`` with ``edit`` applied to its data, written as
    ``tmp_path / "cfg.yaml"``; returns that path."""
    def write(example: Path, edit: Callable[[dict], object]) -> Path:
        data = yaml.safe_load(example.read_text())
        edit(data)
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(data))
        return path
    return write


def _write_fake_pamap2_subject(path, activities: list[int], rows_each: int, seed: int,
                               offset: float = 0.0) -> np.ndarray:
    """A Protocol file: runs of ``rows_each`` rows per activity, NaN heart rate but every 10th row, channel values
    ``offset + channel index + noise``; returns the table written."""
    rng = np.random.default_rng(seed)
    rows = rows_each * len(activities)
    table = offset + np.arange(54, dtype=np.float64)[None, :] + rng.standard_normal((rows, 54))
    table[:, 0] = np.arange(rows) / 100.0
    table[:, 1] = np.repeat(activities, rows_each)
    table[np.arange(rows) % 10 != 0, 2] = np.nan  # the heart rate at a tenth of the rate
    table[5, 10] = np.nan  # a missing IMU value
    np.savetxt(path, table, fmt="%.6f")
    return table


@pytest.fixture
def write_fake_pamap2_subject():
    """``write(path, activities, rows_each, seed, offset=0.0) -> table``: a fake PAMAP2 Protocol file."""
    return _write_fake_pamap2_subject
