"""Quantised, float and corrected logits with their metadata as CSV files, in the design note's folder layout:

    results_alpha{alpha}_clusters{k}_pca{d}_{arch}_w{w}bit_a{a}bit/
        logits_{arch}_w{w}bit_a{a}bit_seed{seed}_{quantized|fullprecision|corrected|metadata}.csv

Logit files have a header ``logit_0, ..., logit_{C-1}`` and one row per sample; the metadata file has per sample its
index, label and the class each model predicts. Files are written ``chunk_rows`` rows at a time, each appearing
only when complete."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from quantlib.atomic_files import open_atomically

KINDS = ("quantized", "fullprecision", "corrected")


def results_folder(root: str | os.PathLike, arch: str, w_bits: int, a_bits: int, alpha: float, num_clusters: int,
                   pca_dim: int) -> Path:
    """The folder of one configuration's files."""
    return Path(root) / f"results_alpha{alpha}_clusters{num_clusters}_pca{pca_dim}_{arch}_w{w_bits}bit_a{a_bits}bit"


def save_logits(folder: str | os.PathLike, arch: str, w_bits: int, a_bits: int, seed: int,
                logits: dict[str, np.ndarray], labels: np.ndarray, chunk_rows: int = 10_000) -> list[Path]:
    """Write ``logits`` (kind -> samples x classes, kinds of ``KINDS``) and the metadata; returns the files."""
    unknown = set(logits) - set(KINDS)
    if unknown:
        raise ValueError(f"Logit kinds {sorted(unknown)} are not allowed; allowed: {list(KINDS)}.")
    stem = f"logits_{arch}_w{w_bits}bit_a{a_bits}bit_seed{seed}"
    folder = Path(folder)
    written = []
    for kind, values in logits.items():
        values = np.asarray(values)
        header = ",".join(f"logit_{i}" for i in range(values.shape[1]))
        written.append(_write_csv(folder / f"{stem}_{kind}.csv", header, values, "%.7g", chunk_rows))
    labels = np.asarray(labels).reshape(-1, 1)
    columns = [np.arange(len(labels)).reshape(-1, 1), labels]
    names = ["index", "label"]
    for kind, values in logits.items():
        columns.append(np.asarray(values).argmax(axis=1).reshape(-1, 1))
        names.append(f"predicted_{kind}")
    written.append(_write_csv(folder / f"{stem}_metadata.csv", ",".join(names), np.hstack(columns), "%d", chunk_rows))
    return written


def _write_csv(path: Path, header: str, rows: np.ndarray, fmt: str, chunk_rows: int) -> Path:
    with open_atomically(path) as f:
        f.write((header + "\n").encode())
        for start in range(0, len(rows), chunk_rows):
            np.savetxt(f, rows[start:start + chunk_rows], fmt=fmt, delimiter=",")
    return path
