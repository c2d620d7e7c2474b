"""Distillation chains against individual training on the bundled digits (or CIFAR with --data-path).

    python bench/distillation.py [--seeds 0 1 2] [--chain 32/32,8/8,4/4,2/2,1/1] [--epochs 10] [--arch preact_resnet8]
                                 [--dataset digits] [--data-path PATH] [--quantization dorefa]
                                 [--residual float] [--threads 2]

Per seed ``quantlib distil --individual`` runs the chain: step i taught by step i-1 and started from its weights,
beside the same step trained alone from scratch, the same epochs per step. One JSON line per seed and step, then
one per step with the means over the seeds (chained, individual, difference).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from quantlib.cli.distil import main as distil


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--chain", default="32/32,8/8,4/4,2/2,1/1")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--arch", default="preact_resnet8")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-path")
    parser.add_argument("--quantization", default="dorefa", choices=["dorefa", "pact", "lsq"])
    parser.add_argument("--residual", default="float", choices=["float", "quantised"])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    per_step: dict[str, list[dict]] = {}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as out:
            argv = ["--chain", args.chain, "--arch", args.arch, "--epochs", str(args.epochs), "--individual",
                    "--dataset", args.dataset, "--seed", str(seed), "--device", "cpu", "--out", out,
                    "--quantization", args.quantization, "--residual", args.residual]
            if args.data_path:
                argv += ["--data-path", args.data_path]
            if distil(argv) != 0:
                raise SystemExit(f"quantlib distil failed for seed {seed}")
            steps = json.loads((Path(out) / "distil_results.json").read_text())["steps"]
        for row in steps:
            print(json.dumps({"seed": seed, **row}), flush=True)
            per_step.setdefault(row["bits"], []).append(row)
    for bits, rows in per_step.items():
        chained = statistics.fmean(r["accuracy_chained"] for r in rows)
        alone = statistics.fmean(r["accuracy_individual"] for r in rows)
        print(json.dumps({"bits": bits, "chained_mean": round(chained, 2), "individual_mean": round(alone, 2),
                          "chained_minus_individual": round(chained - alone, 2),
                          "seconds_chained_mean": round(statistics.fmean(r["seconds"] for r in rows), 2)}), flush=True)


if __name__ == "__main__":
    main()
