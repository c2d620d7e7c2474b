"""``quantlib pow2``: power-of-two symmetric quantisation (docs/pow2.md).

``quantlib pow2 ptq --config CFG`` quantises weights and biases (step 1), then inputs and outputs (step 3) of the
configured float model, no training; ``quantlib pow2 qat --config CFG`` trains the quantised weights with float
activations in between (step 2, the best epoch kept), and with ``--no-final-ptq`` stops there. Without ``--config``
the default configuration runs: digits_cnn on the bundled digits, 8-bit weights and activations, 32-bit biases.
Written to ``--out``: ``<model>_report.json`` (every tensor's scale, 2^-k and shift; the accuracy after each step),
``<model>_torch.encodings`` (AIMET's format), ``<model>_pow2.png`` and, after the final PTQ, ``<model>_integer.onnx``,
whose onnxruntime results are compared with the integer model's (exit code 4 on any difference).
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from quantlib.atomic_files import write_atomically
from quantlib.cli.inputs import EXIT_MISMATCH, EXIT_OK, UsageError, option, report_errors
from quantlib.cli.plots import png, subplots
from quantlib.pow2 import Pow2Run, run, verify_deployment, write_outputs
from quantlib.pow2.report import ACCURACIES
from quantlib.quantizers import exact_log2

ACCURACY_LABELS = dict(zip(ACCURACIES, ("float", "PTQ", "QAT (best)", "final"), strict=True))


def parser() -> argparse.ArgumentParser:
    """The options of ``quantlib pow2 ptq`` and ``quantlib pow2 qat``."""
    p = argparse.ArgumentParser(prog="quantlib pow2", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", required=True, metavar="{ptq,qat}")
    for step, text in (("ptq", "steps 1 and 3: weights and biases, then inputs and outputs; no training"),
                       ("qat", "steps 1, 2 and 3: PTQ, weight-only QAT, final PTQ")):
        s = steps.add_parser(step, help=text, description=text)
        option(s, "config", type=Path, help="the pipeline's YAML (default: digits_cnn on the bundled digits)")
        option(s, "data-path", help="the data set's folder (overrides data.path)")
        option(s, "max-eval-batches", type=int, help="evaluation batches per accuracy (overrides ptq.max_eval_batches)")
        if step == "qat":
            option(s, "epochs", type=int, help="weight-only QAT epochs (overrides training.epochs)")
            option(s, "no-final-ptq", action="store_true", help="stop after the QAT: activations stay float")
        option(s, "device", choices=["cpu", "cuda", "auto"], help="overrides training.device")
        option(s, "seed", type=int, help="overrides training.seed")
        option(s, "out", type=Path, default=Path("pow2_results"), help="output folder (default pow2_results)")
        option(s, "quiet", action="store_true", help="no progress bars (overrides training.progress)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``quantlib pow2 ARGV``; the exit code."""
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return report_errors(f"quantlib pow2 {args.step}", lambda: run_step(args))


def overrides_of(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration values the options override (``ptq``: no QAT epochs); UsageError naming a bad option."""
    for name, value, low in (("epochs", getattr(args, "epochs", None), 0), ("max-eval-batches", args.max_eval_batches,
                                                                           1)):
        if value is not None and value < low:
            raise UsageError(f"--{name} {value}: give an integer >= {low}.")
    given = {"data_path": args.data_path, "max_eval_batches": args.max_eval_batches, "device": args.device,
             "seed": args.seed, "epochs": 0 if args.step == "ptq" else args.epochs}
    return {**({"progress": False} if args.quiet else {}), **{k: v for k, v in given.items() if v is not None}}


def run_step(args: argparse.Namespace) -> int:
    """Run the pipeline, verify the integer ONNX in onnxruntime, write the files and print the summary."""
    final_ptq = not getattr(args, "no_final_ptq", False)
    overrides = overrides_of(args)
    if args.config is None:
        print("no --config: the default configuration (digits_cnn on the bundled digits, W8/A8, 32-bit biases)")
    result = run(args.config if args.config is not None else {}, final_ptq=final_ptq, overrides=overrides)
    checks = verify_deployment(result, result.evaluation[0][0]) if final_ptq else None
    paths = write_outputs(result, args.out)
    paths["plot"] = args.out / f"{result.config.model}_pow2.png"
    write_atomically(paths["plot"], pow2_plot(result))
    print(summary(result, checks, paths))
    return EXIT_MISMATCH if checks and (checks["onnx_mismatches"] or checks["fake_vs_integer_mismatches"]) else EXIT_OK


def summary(result: Pow2Run, checks: dict[str, int] | None, paths: dict[str, Path]) -> str:
    """The lines printed at the end: steps, accuracies, shifts, the integer checks and the files written."""
    report = result.report
    details = report["final_quantization_details"]
    scales = [s for d in details.values() for s in _listed(d, "scale")]
    pow2 = [s for d in details.values() for s, text in zip(_listed(d, "scale"), _listed(d, "power_of_2"), strict=True)
            if text is not None]
    lines = [report["quantization_type"], *(f"  {step}" for step in report["pipeline_steps"]),
             "accuracy: " + ", ".join(f"{ACCURACY_LABELS[name]} {report[name]:.2f} %" for name in ACCURACIES),
             f"total_improvement (final - float): {report['total_improvement']:+.2f} points",
             f"{len(details)} quantised tensors, {len(pow2)} of {len(scales)} scales powers of two"
             + (f" (2^-k, k from {min(-exact_log2(s) for s in pow2)} to {max(-exact_log2(s) for s in pow2)})"
                if pow2 else "")]
    if checks is not None:
        lines.append(f"integer ONNX in onnxruntime: {checks['onnx_mismatches']} mismatches of "
                     f"{checks['onnx_values']:,} values; fake-quantised vs integer: "
                     f"{checks['fake_vs_integer_mismatches']} mismatches")
    lines.append("wrote " + ", ".join(str(p) for p in paths.values()))
    return "\n".join(lines)


def _listed(detail: dict[str, Any], field: str) -> list:
    """A report entry's ``field`` as a list: one value, or one per output channel."""
    return detail[field] if isinstance(detail[field], list) else [detail[field]]


def pow2_plot(result: Pow2Run) -> bytes:
    """PNG: the accuracy after each step; per layer, the bits of each tensor and its k = -log2(scale) (the shift of
    a power-of-two scale; one point per channel for per-channel scales)."""
    report = result.report
    details = report["final_quantization_details"]
    figure, (acc, bits, shifts) = subplots(1, 3, figsize=(15, 4))
    acc.bar([ACCURACY_LABELS[name] for name in ACCURACIES], [report[name] for name in ACCURACIES], color="tab:blue")
    acc.set_ylim(max(0.0, min(report[name] for name in ACCURACIES) - 5), 100)
    acc.set_ylabel("accuracy (%)")
    acc.set_title("accuracy after each step")
    layers = list(dict.fromkeys(key.rsplit(".", 1)[0] for key in details))
    for kind, marker in (("weight", "o"), ("bias", "s"), ("input", "^"), ("output", "v")):
        present = [(i, details[f"{layer}.{kind}"]) for i, layer in enumerate(layers) if f"{layer}.{kind}" in details]
        if not present:
            continue
        bits.plot([i for i, _ in present], [d["bitwidth"] for _, d in present], marker, label=kind)
        points = [(i, -math.log2(s)) for i, d in present for s in _listed(d, "scale")]
        shifts.plot([i for i, _ in points], [k for _, k in points], marker, label=kind)
    for axes, label, title in ((bits, "bits", "bits per tensor"), (shifts, "k = -log2(scale)", "shift per tensor")):
        axes.set_xticks(range(len(layers)), layers, rotation=60, ha="right", fontsize=7)
        axes.set_ylabel(label)
        axes.set_title(title)
        axes.legend(fontsize=7)
    return png(figure)


if __name__ == "__main__":
    sys.exit(main())
