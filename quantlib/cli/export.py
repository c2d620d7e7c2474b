"""``quantlib-export``: a checkpoint in, a DIANA deliverable folder out (DORY ONNX, twin, goldens, config, report)."""

from __future__ import annotations

import argparse
import logging
import pickle
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from quantlib.backends.diana.descriptors import DescriptorError
from quantlib.backends.diana.diana_module import DianaModule, Stage
from quantlib.backends.diana.export import check_output_folder
from quantlib.backends.diana.recipe import restore, step
from quantlib.backends.diana.report import format_report
from quantlib.checkpoint import Checkpoint, CheckpointError, build_architecture, checkpoint_from, is_checkpoint
from quantlib.data.cifar10 import CifarError
from quantlib.data.sources import data_source
from quantlib.errors import QuantlibError

EXIT_OK, EXIT_USAGE, EXIT_HARDWARE, EXIT_MISMATCH = 0, 2, 3, 4
CALIBRATION_BATCHES = 8
VERIFY_INPUTS = 16

EPILOG = """examples:
  quantlib-export model.pt --target diana
      a checkpoint written by examples/ (its architecture, stage and data are inside); output: model_diana/
  quantlib-export resnet20.pt --target diana --arch quantlib.zoo:resnet20 --calib cifar10:data/cifar-10-batches-py \\
      --analog auto -o out/resnet20
      a plain state_dict: build the architecture, calibrate on CIFAR-10, analog where the rules allow
  quantlib-export model.pt --target diana --descriptors cores.yaml --dialect htvm
      cores per layer from a descriptor file; the executable twin shaped for HTVM

exit codes: 0 ok; 2 usage error or unreadable input; 3 hardware-rule violations (the report is still written);
4 onnxruntime on the twin differs from the integer model."""


class UsageError(Exception):
    """Bad arguments or unreadable input: exit code 2 with the message."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quantlib-export", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a quantlib checkpoint, a state_dict (with --arch), or a pickled "
                                                 "model (with --trust-pickle)")
    p.add_argument("--target", choices=["diana"], default="diana", help="the hardware (default: diana)")
    p.add_argument("-o", "--out", type=Path, help="output folder (default: <checkpoint name>_diana next to it)")
    p.add_argument("--name", help="network name in the file names (default: the checkpoint's stem)")
    p.add_argument("--dialect", choices=["dory", "htvm"], default="dory", help="shape of the executable twin")
    p.add_argument("--descriptors", type=Path, help="YAML file: layer name -> ANALOG | DIGITAL")
    p.add_argument("--analog", choices=["none", "auto"], default=None,
                   help="core policy for layers the descriptors do not name (default: none)")
    p.add_argument("--calib", help="calibration data: digits, cifar10:PATH or random:N (default: the checkpoint's "
                                   "training data)")
    p.add_argument("--input-shape", help="input shape without the batch: C,H,W for images, C,L for sequences, F "
                                         "for feature vectors (default: from the checkpoint or the data)")
    p.add_argument("--arch", help="architecture as module:callable, for a plain state_dict or to override")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow a whole pickled nn.Module (unpickling runs code from the file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        return run(args)
    except (UsageError, CheckpointError, DescriptorError, CifarError, ValueError) as exc:
        print(f"quantlib-export: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except QuantlibError as exc:
        print(f"quantlib-export: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out = check_output_folder(args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}_diana"))  # before work
    loaded = _load(args.checkpoint, args.trust_pickle)
    model, checkpoint = _model(loaded, args)
    shape = _input_shape(args, checkpoint)
    data_spec = args.calib or (checkpoint.data if checkpoint is not None else None)
    if isinstance(model, DianaModule):
        if args.descriptors is not None or args.analog is not None:
            raise UsageError(f"Checkpoint '{args.checkpoint}' is at stage '{model.stage.label}': its cores are fixed; "
                             f"drop --descriptors / --analog (they apply to float models).")
        dm = model
    else:
        dm = DianaModule.from_fp_model(model, torch.zeros(1, *shape) if shape else None,
                                       descriptors=args.descriptors, analog=args.analog or "none")
    calibration = _calibration(dm, data_spec, shape)
    while dm.stage < Stage.INTEGER:
        step(dm, calibration, progress=not args.quiet)
    name = args.name or args.checkpoint.stem
    verify_on = torch.cat(calibration)[:VERIFY_INPUTS] if calibration else None
    result = dm.export(out, name, dialect=args.dialect, verify_on=verify_on)
    if not args.quiet:
        print(format_report(dm.report()))
        print()
    cores = list(dm.cores.values())
    print(f"wrote {len(result.files)} files to {result.out_dir}/ in {time.perf_counter() - start:.2f} s "
          f"({cores.count('digital')} digital, {cores.count('analog')} analog layers; dialect {args.dialect})")
    print(result.summary())
    if result.mismatches:
        return EXIT_MISMATCH
    if result.errors:
        print(f"{len(result.errors)} hardware-rule violation(s):", *result.errors, sep="\n  ", file=sys.stderr)
        return EXIT_HARDWARE
    return EXIT_OK


def _load(path: Path, trust_pickle: bool) -> object:
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


def _model(loaded: object, args: argparse.Namespace) -> tuple[nn.Module | DianaModule, Checkpoint | None]:
    """The model in the checkpoint, and the quantlib Checkpoint when it is one."""
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


def _calibration(dm: DianaModule, spec: str | None, shape: tuple[int, ...] | None) -> list[torch.Tensor]:
    """Calibration inputs when a remaining stage needs data (calibrate, or map_scales with analog layers)."""
    needs_data = any(row.data_needed(dm) for row in dm.STAGES.rows[dm.stage:])
    if spec is None:
        if needs_data:
            raise UsageError(f"The model is at stage '{dm.stage.label}' and needs calibration data: pass --calib "
                             f"digits, cifar10:PATH or random:N.")
        return []
    source = data_source(spec, shape)
    if shape is not None and tuple(source.input_shape) != tuple(shape):
        raise UsageError(f"--calib {spec} gives inputs of shape {list(source.input_shape)}, but the model takes "
                         f"{list(shape)}.")
    return source.calibration_batches(CALIBRATION_BATCHES)


if __name__ == "__main__":
    sys.exit(main())
