"""``quantlib-export --target diana``: a checkpoint in, a DIANA deliverable folder out (DORY ONNX, twin, goldens,
config, report)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from quantlib.backends.diana.descriptors import DescriptorError
from quantlib.backends.diana.diana_module import DianaModule, Stage
from quantlib.backends.diana.export import check_output_folder
from quantlib.backends.diana.recipe import restore, step
from quantlib.backends.diana.report import format_report
from quantlib.cli.inputs import (
    EXIT_HARDWARE,
    EXIT_MISMATCH,
    EXIT_OK,
    VERIFY_INPUTS,
    Outcome,
    UsageError,
    calibration_inputs,
    read_model,
)

USAGE_ERRORS = (DescriptorError,)
"""This target's errors that are the user's input (exit code 2 with the message)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """DIANA's options."""
    p.add_argument("--dialect", choices=["dory", "htvm"], default="dory", help="shape of the executable twin")
    p.add_argument("--descriptors", type=Path, help="YAML file: layer name -> ANALOG | DIGITAL")
    p.add_argument("--analog", choices=["none", "auto"], default=None,
                   help="core policy for layers the descriptors do not name (default: none)")


def run(args: argparse.Namespace) -> Outcome:
    """Build (or restore) the DianaModule, take it through its remaining stages, export."""
    start = time.perf_counter()
    out = check_output_folder(args.out or args.checkpoint.with_name(f"{args.checkpoint.stem}_diana"))  # before work
    model, shape, data_spec = read_model(args, restore)
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
    cores = list(dm.cores.values())
    lines = [*([format_report(dm.report()), ""] if not args.quiet else []),
             f"wrote {len(result.files)} files to {result.out_dir}/ in {time.perf_counter() - start:.2f} s "
             f"({cores.count('digital')} digital, {cores.count('analog')} analog layers; dialect {args.dialect})",
             result.summary()]
    if result.mismatches:
        return Outcome(EXIT_MISMATCH, lines)
    if result.errors:
        return Outcome(EXIT_HARDWARE, lines, [f"{len(result.errors)} hardware-rule violation(s):",
                                              *(f"  {e}" for e in result.errors)])
    return Outcome(EXIT_OK, lines)


def _calibration(dm: DianaModule, spec: str | None, shape: tuple[int, ...] | None) -> list[torch.Tensor]:
    """Calibration inputs when a remaining stage needs data (calibrate, or map_scales with analog layers)."""
    needs_data = any(row.data_needed(dm) for row in dm.STAGES.rows[dm.stage:])
    if spec is None:
        if needs_data:
            raise UsageError(f"The model is at stage '{dm.stage.label}' and needs calibration data: pass --calib "
                             f"digits, cifar10:PATH, cifar100:PATH, imagenet:PATH or random:N.")
        return []
    return calibration_inputs(spec, shape)


