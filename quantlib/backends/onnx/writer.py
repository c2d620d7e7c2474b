"""Writing ONNX models to disk deterministically and atomically."""

from __future__ import annotations

import os
from pathlib import Path

import onnx

from quantlib.atomic_files import write_atomically


def save_atomically(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialise ``model`` deterministically and write it to ``path`` atomically."""
    return write_atomically(path, model.SerializeToString(deterministic=True))
