"""Writing ONNX models to disk deterministically and atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import onnx


def save_atomically(model: onnx.ModelProto, path: str | os.PathLike) -> Path:
    """Serialise ``model`` (deterministically) to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString(deterministic=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
