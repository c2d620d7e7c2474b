"""Arrays from a ``.npz`` file: ``x`` ([N, C, T] time series or [N, C, H, W] images) and ``y`` ([N] class indices),
split into training and test by a seeded shuffle (``test_fraction``); or ``x_train``, ``y_train``, ``x_test``,
``y_test`` as given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from quantlib.data.errors import DataError


def load_npz(path: str | Path, test_fraction: float = 0.2, seed: int = 0) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) of the arrays in ``path`` (the module doc)."""
    try:
        arrays = np.load(path)
    except (OSError, ValueError) as error:
        raise DataError(f"Cannot read '{path}' as a .npz file: {error}") from error
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"'{path}' holds one array (a .npy file), not named arrays: save x and y with numpy.savez.")
    with arrays:
        data = {k: arrays[k] for k in arrays.files}
    if {"x_train", "y_train", "x_test", "y_test"} <= set(data):
        pairs = [(data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])]
    elif {"x", "y"} <= set(data):
        if len(data["x"]) < 2:
            raise DataError(f"'{path}': x has {len(data['x'])} sample(s); a split into training and test needs 2.")
        order = np.random.default_rng(seed).permutation(len(data["x"]))
        n_test = max(1, round(test_fraction * len(order)))
        pairs = [(data["x"][order[n_test:]], data["y"][order[n_test:]]),
                 (data["x"][order[:n_test]], data["y"][order[:n_test]])]
    else:
        raise DataError(f"'{path}' holds arrays {sorted(data)}; give 'x' and 'y', or 'x_train', 'y_train', 'x_test' "
                        f"and 'y_test'.")
    datasets = []
    for x, y in pairs:
        if x.ndim not in (3, 4) or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"'{path}': x must be [N, C, T] or [N, C, H, W] and y [N] with the same N, got "
                            f"{list(x.shape)} and {list(y.shape)}.")
        if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise DataError(f"'{path}': y must hold class indices (integers >= 0), got dtype {y.dtype}.")
        datasets.append(TensorDataset(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64))))
    return datasets[0], datasets[1]


def npz_loaders(path: str | Path, batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Shuffled training and ordered test loaders of ``load_npz(path)``."""
    train, test = load_npz(path, seed=seed)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(test, batch_size=batch_size))
