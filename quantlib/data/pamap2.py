"""PAMAP2 Physical Activity Monitoring (Reiss & Stricker 2012) from its ``Protocol/subject10X.dat`` files.

Each row has 54 space-separated columns: timestamp (s), activity id, heart rate (bpm), then 17 for each of three IMUs
(hand, chest, ankle): temperature, 3-D acceleration +-16 g, 3-D acceleration +-6 g, 3-D gyroscope, 3-D magnetometer
and 4 orientation columns, which the data set documents as invalid. NaN marks a missing value (the heart rate is
sampled at about 9 Hz, the IMUs at 100 Hz).

The reader keeps 40 channels (the heart rate and each IMU's 13 valid columns), fills each subject's gaps by carrying
the last value forward (then the first one back), and cuts each run of one activity other than 0 (transient, dropped)
into windows of ``window`` samples every ``stride`` (a window never spans two activities). Channels are normalised by
the mean and standard deviation of the training subjects only; ``test_subjects`` are left out of training entirely.
Labels are the indices of the 12 protocol activities in ``ACTIVITIES``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from quantlib.data.errors import DataError

COLUMNS = 54
ACTIVITIES = (1, 2, 3, 4, 5, 6, 7, 12, 13, 16, 17, 24)
"""The protocol's activities: lying, sitting, standing, walking, running, cycling, Nordic walking, ascending stairs,
descending stairs, vacuum cleaning, ironing, rope jumping."""
IMU_VALID = list(range(0, 13))  # temperature, acc 16 g (3), acc 6 g (3), gyroscope (3), magnetometer (3)
CHANNELS = [2] + [3 + 17 * imu + c for imu in range(3) for c in IMU_VALID]


def read_subject(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(samples [T, 40] float32 with gaps filled, activity ids [T], 0 for transient rows) of one subject file."""
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as error:
        raise DataError(f"PAMAP2 file '{path}' cannot be read as space-separated numbers: {error}") from error
    if table.shape[1] != COLUMNS:
        raise DataError(f"PAMAP2 file '{path}' has {table.shape[1]} columns per row; the Protocol files have "
                        f"{COLUMNS} (timestamp, activity, heart rate, 3 x 17 IMU columns).")
    activity = table[:, 1].astype(np.int64)
    unknown = sorted(set(activity.tolist()) - {0, *ACTIVITIES})
    if unknown:
        raise DataError(f"PAMAP2 file '{path}' has activity ids {unknown}; the protocol's are 0 (transient) and "
                        f"{list(ACTIVITIES)}.")
    return _filled(table[:, CHANNELS]).astype(np.float32), activity


def _filled(x: np.ndarray) -> np.ndarray:
    """Each column's NaNs replaced by its last value before them (the first value for leading NaNs)."""
    out = x.copy()
    for c in range(out.shape[1]):
        column = out[:, c]
        valid = ~np.isnan(column)
        if not valid.any():
            column[:] = 0.0
            continue
        index = np.where(valid, np.arange(len(column)), 0)
        np.maximum.accumulate(index, out=index)
        column[:] = column[index]
        column[: np.argmax(valid)] = column[np.argmax(valid)]
    return out


def windows(samples: np.ndarray, activity: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows [N, 40, window] of ``samples`` inside runs of one activity (transient runs, activity 0, skipped: a
    window never spans one), and their label indices [N]."""
    xs, ys = [], []
    boundaries = np.flatnonzero(np.diff(activity)) + 1
    for run in np.split(np.arange(len(activity)), boundaries):
        if activity[run[0]] == 0:
            continue
        for start in range(0, len(run) - window + 1, stride):
            xs.append(samples[run[start]:run[start] + window].T)
            ys.append(ACTIVITIES.index(int(activity[run[0]])))
    if not xs:
        return np.zeros((0, samples.shape[1], window), np.float32), np.zeros(0, np.int64)
    return np.stack(xs), np.asarray(ys, np.int64)


def load_pamap2(path: str | Path, test_subjects: Sequence[int] = (105,), window: int = 512, stride: int = 256
                ) -> tuple[TensorDataset, TensorDataset]:
    """(train, test) windows of the subjects in ``path`` (the data set folder, or its ``Protocol`` folder), test
    subjects left out, normalised by the training subjects' channel statistics."""
    folder = Path(path)
    folder = folder / "Protocol" if (folder / "Protocol").is_dir() else folder
    files = sorted(folder.glob("subject10*.dat"))
    if not files:
        raise DataError(f"PAMAP2 folder '{path}' has no Protocol/subject10X.dat files; give the PAMAP2_Dataset "
                        f"folder or its Protocol folder.")
    subjects = {int(f.stem.removeprefix("subject")): f for f in files}
    missing = sorted(set(test_subjects) - set(subjects))
    if missing or not set(subjects) - set(test_subjects):
        raise DataError(f"PAMAP2 folder '{path}' has subjects {sorted(subjects)}; test subjects {list(test_subjects)} "
                        f"must be among them and leave at least one for training (missing: {missing}).")
    split: dict[bool, list[tuple[np.ndarray, np.ndarray]]] = {True: [], False: []}
    for subject, file in subjects.items():
        split[subject in test_subjects].append(read_subject(file))
    train_samples = np.concatenate([s[a != 0] for s, a in split[False]])  # statistics of the activities only
    mean, std = train_samples.mean(axis=0), train_samples.std(axis=0)
    std[std == 0] = 1.0
    datasets = []
    for is_test in (False, True):
        cut = [windows((s - mean) / std, a, window, stride) for s, a in split[is_test]]
        x = np.concatenate([c[0] for c in cut]).astype(np.float32)
        y = np.concatenate([c[1] for c in cut])
        if len(x) == 0:
            raise DataError(f"PAMAP2 folder '{path}': the {'test' if is_test else 'training'} subjects give no "
                            f"window of {window} samples of one activity; use a shorter window.")
        datasets.append(TensorDataset(torch.from_numpy(x), torch.from_numpy(y)))
    return datasets[0], datasets[1]


def pamap2_loaders(path: str | Path, batch_size: int = 64, seed: int = 0, **options) -> tuple[DataLoader, DataLoader]:
    """Shuffled training and ordered test loaders of ``load_pamap2(path, **options)``."""
    train, test = load_pamap2(path, **options)
    return (DataLoader(train, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed)),
            DataLoader(test, batch_size=batch_size))
