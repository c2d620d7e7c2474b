"""Checkpoints of the examples and of ``quantlib-export``: the architecture (an importable ``module:callable`` and its
keyword arguments), the input shape, the data it was trained on, the stage, and the state dict of the float model or
of the DianaModule. They hold only tensors, numbers, strings, lists and dicts, so ``torch.load(weights_only=True)``
reads them without running code from the file."""

from __future__ import annotations

import importlib
import io
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantlib.atomic_files import write_atomically
from quantlib.errors import QuantlibError

FORMAT = "quantlib-checkpoint"
VERSION = 1
FLOAT_STAGE = "float"


class CheckpointError(QuantlibError):
    """A checkpoint or architecture cannot be used; the message names the file or the ``module:callable``."""


@dataclass
class Checkpoint:
    arch: str                                  # "package.module:factory"
    arch_kwargs: dict[str, Any]
    input_shape: list[int]                     # one input, batch excluded
    stage: str                                 # "float", or the label of a staged module's stage
    state_dict: dict[str, Any]
    data: str | None = None                    # the data spec it was trained on ("digits", "cifar10:PATH")
    history: dict[str, float] = field(default_factory=dict)  # accuracy per stage so far

    def build(self) -> nn.Module:
        """A fresh float model of the checkpoint's architecture."""
        return build_architecture(self.arch, self.arch_kwargs)

    def does_not_fit(self, exc: Exception) -> CheckpointError:
        """The error of a state dict that does not fit the checkpoint's architecture (``exc``: what loading raised)."""
        return CheckpointError(f"The checkpoint's state does not fit architecture '{self.arch}': "
                               f"{str(exc).strip()[:500]}")


def _import_as_python_m_does(module_name: str):
    """Import ``module_name``, finding modules of the current folder first, as ``python -m`` does."""
    cwd = os.getcwd()
    if cwd in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(cwd)


def build_architecture(arch: str, kwargs: Mapping[str, Any] | None = None) -> nn.Module:
    """Call the factory named ``module:callable`` (its module found in the current folder too, as ``python -m``
    finds it) with ``kwargs``; CheckpointError says what went wrong."""
    module_name, _, attr = arch.partition(":")
    if not module_name or not attr:
        raise CheckpointError(f"Architecture '{arch}' must be 'module:callable', e.g. 'quantlib.zoo:resnet20'.")
    try:
        factory = getattr(_import_as_python_m_does(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise CheckpointError(f"Cannot import architecture '{arch}' (looked in the current folder "
                              f"{os.getcwd()} and the installed packages): {exc}.") from exc
    try:
        model = factory(**dict(kwargs or {}))
    except Exception as exc:
        raise CheckpointError(f"Architecture '{arch}' failed to build with {dict(kwargs or {})}: {exc}.") from exc
    if not isinstance(model, nn.Module):
        raise CheckpointError(f"Architecture '{arch}' returned a {type(model).__name__}, not a torch.nn.Module.")
    return model


def float_model(checkpoint: Checkpoint) -> nn.Module:
    """The float model (in eval mode) of a checkpoint at the float stage; CheckpointError for a later stage."""
    if checkpoint.stage != FLOAT_STAGE:
        raise CheckpointError(f"The checkpoint is at stage '{checkpoint.stage}' of a staged recipe, not a float model; "
                              f"export it with the target that wrote it, or save the float model.")
    model = checkpoint.build()
    try:
        model.load_state_dict(checkpoint.state_dict)
    except RuntimeError as exc:
        raise checkpoint.does_not_fit(exc) from exc
    return model.eval()


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write ``checkpoint`` to ``path`` atomically."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "version": VERSION, **asdict(checkpoint)}, buffer)
    return write_atomically(path, buffer.getvalue())


def is_checkpoint(obj: object) -> bool:
    return isinstance(obj, Mapping) and obj.get("format") == FORMAT


def checkpoint_from(obj: Mapping[str, Any], source: str) -> Checkpoint:
    """The Checkpoint held by a loaded quantlib checkpoint dict (``source`` names it in errors)."""
    if obj.get("version") != VERSION:
        raise CheckpointError(f"Checkpoint '{source}' has version {obj.get('version')}; this quantlib reads "
                              f"version {VERSION}.")
    fields = ("arch", "arch_kwargs", "input_shape", "stage", "state_dict", "data", "history")
    missing = [f for f in fields[:5] if f not in obj]
    if missing:
        raise CheckpointError(f"Checkpoint '{source}' lacks {missing}.")
    return Checkpoint(**{f: obj[f] for f in fields if f in obj})


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a quantlib checkpoint with ``torch.load(weights_only=True)``; CheckpointError names the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Cannot read checkpoint '{path}': no such file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"Cannot read checkpoint '{path}': {exc}") from exc
    if not is_checkpoint(obj):
        raise CheckpointError(f"'{path}' is not a quantlib checkpoint (no 'format': '{FORMAT}'); quantlib-export "
                              f"also takes plain state_dicts with --arch.")
    return checkpoint_from(obj, str(path))
