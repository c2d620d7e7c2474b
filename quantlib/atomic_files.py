"""Writing files so that a reader never sees half of one: a temporary file beside the target, then a rename."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def umask_mode(mode: int) -> int:
    """``mode`` as the process's umask lets a new file or folder have it (0o666 -> 0o644 under umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def write_atomically(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` via a temporary file in the same folder and a rename;
    on failure nothing is left behind and an existing file keeps its old content. The file gets the permissions the
    umask gives a new file (a temporary file alone would be private)."""
    with open_atomically(path) as f:
        f.write(data.encode() if isinstance(data, str) else data)
    return Path(path)


@contextmanager
def open_atomically(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` in pieces (``write_atomically``'s guarantees): it appears under its name, with
    everything written, only when the block ends without an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, umask_mode(0o666))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
