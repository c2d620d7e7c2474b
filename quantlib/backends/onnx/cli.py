"""``quantlib-export --target onnx``: a float model in, one standard integer ONNX file out (8-bit per tensor,
power-of-two scales; docs/export-format.md), checked element for element against the integer model in onnxruntime."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import onnx
import torch

from quantlib.backends.onnx.integer_export import export_integer_onnx
from quantlib.backends.onnx.verify import verify_onnxruntime
from quantlib.checkpoint import float_model
from quantlib.cli.inputs import (
    EXIT_MISMATCH,
    EXIT_OK,
    VERIFY_INPUTS,
    Outcome,
    UsageError,
    calibration_inputs,
    read_model,
)
from quantlib.true_quantisation import pow2_integer_flow

USAGE_ERRORS = ()
"""This target raises no errors of its own for bad input (the common ones are caught by ``quantlib-export``)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The generic target has no options beyond those every target takes."""


def run(args: argparse.Namespace) -> Outcome:
    """Quantise, calibrate, map to powers of two, integerise, export, check in onnxruntime."""
    start = time.perf_counter()
    name = args.name or args.checkpoint.stem
    out = _writable(args.out or args.checkpoint.with_name(f"{name}_int.onnx"))  # before any work
    model, shape, spec = read_model(args, float_model)
    if spec is None:
        raise UsageError("The integer ONNX target calibrates the model: pass --calib digits, cifar10:PATH, "
                         "cifar100:PATH, imagenet:PATH or random:N.")
    calibration = calibration_inputs(spec, shape)
    x = torch.cat(calibration)
    flow = pow2_integer_flow(model, x[:1], calibration)
    exported = export_integer_onnx(flow.integer, x[:1], out)
    comparisons = verify_onnxruntime(flow.integer, exported, x[:VERIFY_INPUTS])
    mismatches = sum(c.mismatches for c in comparisons)
    return Outcome(EXIT_MISMATCH if mismatches else EXIT_OK, [
        f"wrote {out} in {time.perf_counter() - start:.2f} s ({len(exported.model.graph.node)} ONNX nodes)",
        f"onnxruntime vs the integer model: {mismatches} mismatches in {sum(c.elements for c in comparisons)} values "
        f"at {len(comparisons)} layers and outputs"])


def _writable(path: Path) -> Path:
    """``path``, if the export may write it: it does not exist, or is an ONNX file quantlib wrote; else UsageError."""
    if not path.exists():
        return path
    if path.is_dir():
        raise UsageError(f"Output '{path}' is a folder; the integer ONNX target writes one file: pass -o FILE.onnx.")
    try:
        producer = onnx.load(str(path), load_external_data=False).producer_name
    except Exception:  # noqa: BLE001 - whatever it is, it is not ours
        producer = None
    if producer != "quantlib":
        raise UsageError(f"Output '{path}' exists and is not an ONNX file quantlib wrote; choose another -o, or move "
                         f"it away.")
    return path
