"""A validation split held out of a training loader: what picks a best epoch without looking at the test set."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, random_split


def hold_out(train: DataLoader, fraction: float, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """``train`` without a random ``fraction`` of its samples (reshuffled every epoch, in an order set by ``seed``),
    and those samples in a fixed order, both batched as ``train``; the same ``seed`` holds out the same samples."""
    if train.batch_size is None:
        raise ValueError("Cannot hold a validation split out of a DataLoader built with a batch_sampler: give it a "
                         "batch_size instead, or pick the best epoch on the evaluation batches.")
    if not 0 < fraction < 1:
        raise ValueError(f"The validation fraction must lie strictly between 0 and 1, not {fraction!r}.")
    size = len(train.dataset)
    held = int(round(size * fraction))
    if not 0 < held < size:
        raise ValueError(f"A validation fraction of {fraction} of {size} training samples leaves {held} to validate "
                         f"on and {size - held} to train on; both need at least one.")
    rest, validation = random_split(train.dataset, [size - held, held], generator=torch.Generator().manual_seed(seed))
    loader = dict(batch_size=train.batch_size, num_workers=train.num_workers, collate_fn=train.collate_fn,
                  pin_memory=train.pin_memory, worker_init_fn=train.worker_init_fn,
                  persistent_workers=train.persistent_workers)
    return (DataLoader(rest, shuffle=True, drop_last=train.drop_last,
                       generator=torch.Generator().manual_seed(seed), **loader),
            DataLoader(validation, **loader))
