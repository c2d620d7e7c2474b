"""``quantlib-export``: a checkpoint in, a target's deliverable out. ``--target diana``: the DIANA folder (DORY ONNX,
twin, goldens, config, report); ``--target onnx``: one standard integer ONNX file that onnxruntime runs. Each target
is a module that adds its options and runs the export; it is imported only when asked for."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from quantlib.checkpoint import CheckpointError
from quantlib.cli.inputs import EXIT_HARDWARE, EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, UsageError
from quantlib.data.cifar10 import CifarError
from quantlib.errors import QuantlibError

TARGETS = {"diana": "quantlib.backends.diana.cli", "onnx": "quantlib.backends.onnx.cli"}
"""``--target`` -> the module with its ``add_arguments(parser)``, ``run(args) -> Outcome`` and ``USAGE_ERRORS``."""

EPILOG = """examples:
  quantlib-export model.pt --target diana
      a checkpoint written by examples/ (its architecture, stage and data are inside); output: model_diana/
  quantlib-export resnet20.pt --target diana --arch quantlib.zoo:resnet20 --calib cifar10:data/cifar-10-batches-py \\
      --analog auto -o out/resnet20
      a plain state_dict: build the architecture, calibrate on CIFAR-10, analog where the rules allow
  quantlib-export model.pt --target diana --descriptors cores.yaml --dialect htvm
      cores per layer from a descriptor file; the executable twin shaped for HTVM
  quantlib-export model.pt --target onnx
      a float checkpoint as standard integer ONNX (8-bit, power-of-two scales); output: model_int.onnx

exit codes: 0 ok; 2 usage error or unreadable input; 3 hardware-rule violations (the report is still written);
4 onnxruntime on the exported network differs from the integer model."""

__all__ = ["EXIT_HARDWARE", "EXIT_MISMATCH", "EXIT_OK", "EXIT_USAGE", "TARGETS", "main", "parser"]


def parser(target: str | None = None) -> argparse.ArgumentParser:
    """The options every target takes, and ``target``'s own."""
    p = argparse.ArgumentParser(prog="quantlib-export", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a quantlib checkpoint, a state_dict (with --arch), or a pickled "
                                                 "model (with --trust-pickle)")
    p.add_argument("--target", choices=sorted(TARGETS), default="diana",
                   help="what to export for (default: diana); --target T --help lists T's options")
    p.add_argument("-o", "--out", type=Path, help="output path (default: next to the checkpoint, named by the target)")
    p.add_argument("--name", help="network name in the file names (default: the checkpoint's stem)")
    p.add_argument("--calib", help="calibration data: digits, cifar10:PATH, cifar100:PATH, imagenet:PATH or "
                                   "random:N (default: the checkpoint's training data)")
    p.add_argument("--input-shape", help="input shape without the batch: C,H,W for images, C,L for sequences, F "
                                         "for feature vectors (default: from the checkpoint or the data)")
    p.add_argument("--arch", help="architecture as module:callable, for a plain state_dict or to override")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a whole pickled nn.Module (unpickling runs code from the file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no table")
    if target is not None:
        importlib.import_module(TARGETS[target]).add_arguments(p.add_argument_group(f"--target {target}"))
    return p


def _target(argv: list[str]) -> str:
    """The ``--target`` of ``argv`` (an unknown one is refused with the choices)."""
    first = argparse.ArgumentParser(prog="quantlib-export", add_help=False)
    first.add_argument("--target", choices=sorted(TARGETS), default="diana")
    return first.parse_known_args(argv)[0].target


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    name = _target(argv)  # first, so that the target's own options are known
    target = importlib.import_module(TARGETS[name])
    args = parser(name).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        outcome = target.run(args)
    except (UsageError, CheckpointError, CifarError, ValueError, *target.USAGE_ERRORS) as exc:
        print(f"quantlib-export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except QuantlibError as exc:
        print(f"quantlib-export: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(*outcome.lines, sep="\n")
    if outcome.problems:
        print(*outcome.problems, sep="\n", file=sys.stderr)
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
