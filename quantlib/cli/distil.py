"""``quantlib distil``: distillation chains across bit-widths (docs/distillation.md).

``--chain 32/32,8/8,4/4,2/2,1/1`` trains the steps in order; step i's student (w/a bits) is taught by step i-1's
result (Hinton's loss) and starts from its weights (``--student-init teacher``, the default) or from scratch; the
first step has no teacher. ``--individual`` also trains every step without a teacher, from scratch, for comparison.
The design note's single pair (``--teacher-wbits 8 --teacher-abits 8 --student-wbits 4 ...``) is a chain of two.
Each step's model is written as ``step<i>_w<W>a<A>[_individual].pt`` in ``--out``; with ``--resume`` a step whose
file exists is read back instead of trained, so a chain resumes at any step. Under torchrun every rank trains the
chain (DistributedDataParallel keeps them equal); rank 0 alone prints and writes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantlib.atomic_files import write_atomically
from quantlib.cli.inputs import EXIT_OK, UsageError, option, report_errors
from quantlib.cli.plots import png, subplots
from quantlib.data.sources import data_source
from quantlib.distillation import DistillationLoss, QuantSpec, quantised_preact_resnet, record_levels
from quantlib.distillation.quantised_models import METHODS, RESIDUALS
from quantlib.distributed import is_main_process, process_group
from quantlib.training import TrainConfig, evaluate, fit, training_device_type

ARCH = re.compile(r"preact_resnet(\d+)(_bottleneck)?$")
DATASETS = {"digits": (1, 10), "cifar10": (3, 10), "cifar100": (3, 100)}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quantlib distil", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    option(p, "chain", help="steps as W/A bits, comma-separated, e.g. 32/32,8/8,4/4,2/2,1/1")
    option(p, "arch", default="preact_resnet20", help="preact_resnetN or preact_resnetN_bottleneck")
    option(p, "width", type=int, default=1, help="width multiplier (default 1)")
    option(p, "dataset", default="digits", choices=list(DATASETS), help="digits (bundled), cifar10 or cifar100")
    option(p, "data-path", help="the CIFAR python folder")
    option(p, "epochs", type=int, default=10, help="epochs per step (default 10)")
    option(p, "lr", type=float, default=3e-3, help="learning rate (default 3e-3, Adam, cosine)")
    option(p, "batch-size", type=int, default=64)
    option(p, "temperature", type=float, default=4.0, help="T of the distillation loss (default 4)")
    option(p, "lambda", dest="lambda_", type=float, default=0.9, help="weight of the KL term (default 0.9)")
    option(p, "quantization", default="dorefa", choices=list(METHODS),
           help="dorefa (default), pact (activations; DoReFa weights) or lsq (weights and activations)")
    option(p, "residual", default="float", choices=list(RESIDUALS),
           help="the residual sums: float (default) or quantised (signed, a_bits, learned step)")
    option(p, "student-init", default="teacher", choices=["teacher", "scratch"])
    option(p, "individual", action="store_true", help="also train every step alone, from scratch")
    option(p, "quantise-first-last", action="store_true", help="quantise the first conv and the classifier too")
    option(p, "resume", action="store_true", help="read back the steps already written in --out")
    option(p, "inspect", action="store_true", help="write each step's levels per layer (levels.json)")
    option(p, "device", default="auto", choices=["cpu", "cuda", "auto"])
    option(p, "seed", type=int, default=0)
    option(p, "out", type=Path, default=Path("distil_results"))
    for role in ("teacher", "student"):
        option(p, f"{role}-wbits", type=int)
        option(p, f"{role}-abits", type=int)
        option(p, f"{role}-quantization", choices=list(METHODS))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return report_errors("quantlib distil", lambda: run(args))


def chain_of(args: argparse.Namespace) -> list[QuantSpec]:
    """The steps the options name (UsageError naming the option otherwise)."""
    pair = [args.teacher_wbits, args.teacher_abits, args.student_wbits, args.student_abits]
    if args.chain is not None and any(v is not None for v in pair):
        raise UsageError("Give --chain or the teacher / student flags, not both.")
    if args.chain is None:
        if any(v is None for v in pair):
            raise UsageError("Give --chain W/A,W/A,... or all of --teacher-wbits, --teacher-abits, --student-wbits, "
                             "--student-abits.")
        return [QuantSpec(args.teacher_wbits, args.teacher_abits, args.teacher_quantization or args.quantization),
                QuantSpec(args.student_wbits, args.student_abits, args.student_quantization or args.quantization)]
    steps = []
    for text in args.chain.split(","):
        match = re.fullmatch(r"(\d+)/(\d+)", text.strip())
        if match is None:
            raise UsageError(f"--chain step {text!r}: give W/A bits, e.g. 4/4.")
        try:
            steps.append(QuantSpec(int(match[1]), int(match[2]), args.quantization))
        except ValueError as error:
            raise UsageError(f"--chain step {text!r}: {error}") from error
    return steps


def run(args: argparse.Namespace) -> int:
    """Check every option, then train the chain (and the individual steps) and write the results."""
    steps = chain_of(args)
    match = ARCH.fullmatch(args.arch)
    if match is None:
        raise UsageError(f"--arch {args.arch!r}: give preact_resnetN (N = 6n + 2) or preact_resnetN_bottleneck "
                         f"(N = 9n + 2).")
    in_channels, classes = DATASETS[args.dataset]

    def build(spec: QuantSpec) -> nn.Module:
        return quantised_preact_resnet(int(match[1]), spec, classes, args.width, match[2] is not None,
                                       args.quantise_first_last, in_channels, args.residual)

    build(steps[0])  # a depth that does not fit is refused before any data is read
    if args.dataset != "digits" and args.data_path is None:
        raise UsageError(f"--dataset {args.dataset} needs --data-path (its python folder).")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} {getattr(args, name)} must be a positive integer.")
    source = data_source("digits" if args.dataset == "digits" else f"{args.dataset}:{args.data_path}",
                         batch_size=args.batch_size)
    config = TrainConfig(epochs=args.epochs, lr=args.lr, device=args.device, seed=args.seed, progress=True)
    # one process group for the whole chain: torch.distributed cannot be initialised again after each step's fit
    with process_group(training_device_type(config.device)):
        return _train_chain(steps, build, source, config, args)


def _train_chain(steps: list[QuantSpec], build, source, config: TrainConfig, args: argparse.Namespace) -> int:
    main_process = is_main_process()
    if main_process:
        args.out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    levels: dict[str, Any] = {}
    teacher = None
    for i, spec in enumerate(steps):
        torch.manual_seed(args.seed + i)  # each step's initial weights, whatever ran before
        student = build(spec)
        if teacher is not None and args.student_init == "teacher":
            _load_matching(student, teacher)
        chained, seconds = _step(student, teacher, source, config, args, args.out / _file(i, spec, False))
        accuracy = evaluate(chained, source.test)[0]
        row = {"step": i, "bits": spec.label(), "teacher": None if i == 0 else steps[i - 1].label(),
               "accuracy_chained": accuracy, "epochs": args.epochs, "seconds": seconds}
        if args.individual and i == 0:  # the first step has no teacher: it is its own individual twin
            row.update(accuracy_individual=accuracy, seconds_individual=seconds)
        elif args.individual:
            torch.manual_seed(args.seed + i)
            alone, alone_seconds = _step(build(spec), None, source, config, args, args.out / _file(i, spec, True))
            row.update(accuracy_individual=evaluate(alone, source.test)[0], seconds_individual=alone_seconds)
        rows.append(row)
        if main_process:
            print(_line(row), flush=True)
        if args.inspect:
            x = next(iter(source.test))[0]
            levels[spec.label()] = [vars(lv) for lv in record_levels(chained, x)]
        teacher = chained
    if not main_process:
        return EXIT_OK
    write_atomically(args.out / "distil_results.json", json.dumps({"arch": args.arch, "steps": rows}, indent=2) + "\n")
    write_atomically(args.out / "distil_accuracy.png", accuracy_plot(rows))
    if args.inspect:
        write_atomically(args.out / "levels.json", json.dumps(levels, indent=2) + "\n")
    print(f"wrote {args.out / 'distil_results.json'} and {args.out / 'distil_accuracy.png'}")
    return EXIT_OK


def _file(i: int, spec: QuantSpec, individual: bool) -> str:
    return f"step{i}_w{spec.w_bits}a{spec.a_bits}{'_individual' if individual else ''}.pt"


def _step(student: nn.Module, teacher: nn.Module | None, source, config: TrainConfig, args: argparse.Namespace,
          path: Path) -> tuple[nn.Module, float]:
    """Train ``student`` (taught by ``teacher`` if given), or with --resume read it from ``path`` if written."""
    if args.resume and path.is_file():
        student.load_state_dict(torch.load(path, weights_only=True)["state_dict"])
        if is_main_process():
            print(f"read {path} (--resume)")
        return student.cpu().eval(), 0.0
    loss = None if teacher is None else DistillationLoss(teacher, args.temperature, args.lambda_)
    start = time.perf_counter()
    fit(student, source.train, config, loss=loss)
    seconds = time.perf_counter() - start
    student.cpu().eval()
    if is_main_process():
        torch.save({"state_dict": student.state_dict()}, path.with_suffix(".tmp"))
        path.with_suffix(".tmp").replace(path)
    return student, seconds


def _load_matching(student: nn.Module, teacher: nn.Module) -> None:
    """The teacher's weights into the student; only quantiser parameters (PACT clips, LSQ steps) may differ between
    the two (a student's LSQ steps then start from its own first batch)."""
    result = student.load_state_dict(teacher.state_dict(), strict=False)
    other = [k for k in (*result.missing_keys, *result.unexpected_keys) if ".clips." not in k and ".steps." not in k]
    if other:
        raise UsageError(f"--student-init teacher: the student and teacher differ in {other[:4]}; use "
                         f"--student-init scratch.")


def _line(row: dict[str, Any]) -> str:
    text = (f"step {row['step']} {row['bits']} (teacher {row['teacher'] or '-'}): chained "
            f"{row['accuracy_chained']:.2f} %, {row['epochs']} epochs, {row['seconds']:.1f} s")
    if "accuracy_individual" in row:
        text += f"; individual {row['accuracy_individual']:.2f} %"
    return text


def accuracy_plot(rows: list[dict[str, Any]]) -> bytes:
    """PNG: accuracy per step, chained (and individual)."""
    figure, axes = subplots(figsize=(6, 3.5))
    labels = [r["bits"] for r in rows]
    axes.plot(labels, [r["accuracy_chained"] for r in rows], "o-", label="chained")
    if all("accuracy_individual" in r for r in rows):
        axes.plot(labels, [r["accuracy_individual"] for r in rows], "s--", label="individual")
    axes.set_xlabel("step (W/A bits)")
    axes.set_ylabel("accuracy (%)")
    axes.legend()
    return png(figure)


if __name__ == "__main__":
    sys.exit(main())
