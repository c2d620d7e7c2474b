"""What every target of ``quantlib-export`` reads: the checkpoint file (a quantlib checkpoint, a state_dict with
``--arch``, or a pickled model with ``--trust-pickle``), the input shape and the calibration data; what it gives back
to print (``Outcome``); and the exit codes."""

from __future__ import annotations

import argparse
import pickle
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantlib.checkpoint import Checkpoint, CheckpointError, build_architecture, checkpoint_from, is_checkpoint
from quantlib.data.sources import data_source
from quantlib.errors import QuantlibError

EXIT_OK, EXIT_USAGE, EXIT_HARDWARE, EXIT_MISMATCH = 0, 2, 3, 4
CALIBRATION_BATCHES = 8
VERIFY_INPUTS = 16


def option(group: argparse._ActionsContainer, name: str, **kwargs: Any) -> None:
    """Add ``--name`` with the design note's underscore spelling as an alias."""
    spellings = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
    group.add_argument(*spellings, **kwargs)


def report_errors(prog: str, run: Callable[[], int]) -> int:
    """``run()``, or exit code 2 with ``prog: error: ...`` on stderr for bad input (a UsageError, a ValueError such as
    a configuration's, a checkpoint that cannot be used) or a quantlib error (named by its type)."""
    try:
        return run()
    except (UsageError, CheckpointError, ValueError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
    except QuantlibError as exc:
        print(f"{prog}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
    return EXIT_USAGE


class UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2 with the message."""


@dataclass(frozen=True)
class Outcome:
    """What a target's export leaves to ``quantlib-export``: its exit code, the lines for stdout and for stderr."""

    exit_code: int
    lines: list[str]
    problems: list[str] = field(default_factory=list)


def read_model(args: argparse.Namespace, restore: Callable[[Checkpoint], nn.Module]
               ) -> tuple[nn.Module, tuple[int, ...] | None, str | None]:
    """The model of ``args.checkpoint`` (a quantlib checkpoint rebuilt by the target's ``restore``), its input shape
    (``--input-shape``, else the checkpoint's) and its calibration data spec (``--calib``, else the checkpoint's)."""
    model, checkpoint = _model_from(load_checkpoint_file(args.checkpoint, args.trust_pickle), args, restore)
    data = args.calib or (checkpoint.data if checkpoint is not None else None)
    return model, _input_shape(args, checkpoint), data


def load_checkpoint_file(path: Path, trust_pickle: bool) -> object:
    """What ``path`` holds, read without running code from it unless ``trust_pickle``."""
    if not path.is_file():
        raise UsageError(f"Cannot read checkpoint '{path}': no such file.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not Python objects, but bytes torch cannot read
            raise UsageError(f"Cannot read checkpoint '{path}': it is not a PyTorch checkpoint (unreadable "
                             f"pickle data).") from exc
        if not trust_pickle:
            raise UsageError(f"Checkpoint '{path}' holds pickled Python objects (a whole model?), and unpickling runs "
                             f"code from the file, so it is refused. Save a state_dict and pass --arch, or pass "
                             f"--trust-pickle if you trust the file.") from exc
    except Exception as exc:
        raise UsageError(f"Cannot read checkpoint '{path}': it is not a PyTorch checkpoint ({exc}).") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UsageError(f"Cannot unpickle '{path}': {exc}.") from exc


def _model_from(loaded: object, args: argparse.Namespace, restore: Callable[[Checkpoint], nn.Module]
               ) -> tuple[nn.Module, Checkpoint | None]:
    """The model in the checkpoint (a quantlib checkpoint rebuilt by the target's ``restore``), and the quantlib
    Checkpoint when it is one."""
    source = str(args.checkpoint)
    if is_checkpoint(loaded):
        checkpoint = checkpoint_from(loaded, source)
        if args.arch:
            checkpoint.arch, checkpoint.arch_kwargs = args.arch, {}
        return restore(checkpoint), checkpoint
    if isinstance(loaded, nn.Module):
        if not args.trust_pickle:
            raise UsageError(f"Checkpoint '{source}' is a pickled model; pass --trust-pickle to load it.")
        return loaded.eval(), None
    if isinstance(loaded, Mapping) and all(isinstance(v, torch.Tensor) for v in loaded.values()):
        if not args.arch:
            raise UsageError(f"Checkpoint '{source}' is a plain state_dict: pass --arch module:callable to say which "
                             f"model it belongs to.")
        model = build_architecture(args.arch)
        try:
            model.load_state_dict(loaded)
        except RuntimeError as exc:
            raise UsageError(f"Checkpoint '{source}' does not fit --arch {args.arch}: "
                             f"{str(exc).strip()[:500]}") from exc
        return model.eval(), None
    raise UsageError(f"Checkpoint '{source}' holds a {type(loaded).__name__}, not a quantlib checkpoint, a state_dict "
                     f"or a model.")


def _input_shape(args: argparse.Namespace, checkpoint: Checkpoint | None) -> tuple[int, ...] | None:
    """``--input-shape``, else the checkpoint's."""
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.split(","))
        except ValueError:
            shape = ()
        if not 1 <= len(shape) <= 3 or min(shape) < 1:
            raise UsageError(f"--input-shape {args.input_shape!r} must be 1 to 3 positive integers: C,H,W (images), "
                             f"C,L (sequences) or F (feature vectors).")
        return shape
    return tuple(checkpoint.input_shape) if checkpoint is not None else None


def calibration_inputs(spec: str, shape: tuple[int, ...] | None) -> list[torch.Tensor]:
    """``CALIBRATION_BATCHES`` input batches of the data ``spec`` (``--calib``), checked against the model's input
    ``shape``."""
    source = data_source(spec, shape)
    if shape is not None and tuple(source.input_shape) != tuple(shape):
        raise UsageError(f"--calib {spec} gives inputs of shape {list(source.input_shape)}, but the model takes "
                         f"{list(shape)}.")
    return source.calibration_batches(CALIBRATION_BATCHES)
