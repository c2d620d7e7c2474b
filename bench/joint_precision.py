"""Joint mixed-precision training on the bundled digits against single-precision training.

    python bench/joint_precision.py [--seeds 0 1 2] [--epochs 20] [--options 2 4 8] [--random 10] [--threads 2]

Per seed: the digits CNN made switchable with the bit-width options (DoReFa weights and activations, switchable
BatchNorm) and trained jointly (2 random configurations per batch, averaged) for ``--epochs``; and, for each option
k, the same network trained at k bits alone for the same epochs (the same number of optimiser steps). One JSON line
per seed and model: test accuracy per uniform bit-width, for the joint model the spread over ``--random`` random
configurations, and the seconds per optimiser step; then one line of means over the seeds, with the joint step's
time relative to a single-precision step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from quantlib import mixed_precision as mp
from quantlib.data import digits_loaders
from quantlib.training import TrainConfig, fit
from quantlib.zoo import digits_cnn


def train(module_and_loss, train_loader, epochs: int) -> float:
    """Train; returns the seconds per optimiser step."""
    module, loss = module_and_loss
    start = time.perf_counter()
    fit(module, train_loader, TrainConfig(epochs=epochs, lr=3e-3, device="cpu", seed=None, progress=False), loss=loss)
    return (time.perf_counter() - start) / (epochs * len(train_loader))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--options", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--random", type=int, default=10, help="random configurations validated per seed")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        torch.manual_seed(seed)
        train_loader, test = digits_loaders(seed=seed)
        joint = mp.switchable(digits_cnn(), args.options)
        generator = torch.Generator().manual_seed(seed)
        step = train(mp.joint_quantization(joint, args.options, 2, generator), train_loader, args.epochs)
        spread = mp.random_bitwidths(joint, test, args.options, args.random,
                                     torch.Generator().manual_seed(seed + 1))
        uniform = {k: e.accuracy for k, e in mp.uniform_table(joint, test, args.options).items()}
        row = {"seed": seed, "model": "joint", "uniform": uniform, "random": spread.summary(), "step_s": step}
        rows.append(row)
        print(json.dumps(row), flush=True)
        for k in args.options:
            torch.manual_seed(seed)
            single = mp.switchable(digits_cnn(), [k])
            step = train(mp.single_precision(single, k), train_loader, args.epochs)
            row = {"seed": seed, "model": f"single_{k}", "uniform": {k: mp.simple_validation(single, test, k).accuracy},
                   "step_s": step}
            rows.append(row)
            print(json.dumps(row), flush=True)
    joint_rows = [r for r in rows if r["model"] == "joint"]
    summary = {"epochs": args.epochs, "seeds": args.seeds,
               "joint_uniform": {k: round(statistics.fmean(r["uniform"][k] for r in joint_rows), 2)
                                 for k in args.options},
               "single_uniform": {k: round(statistics.fmean(r["uniform"][k] for r in rows
                                                            if r["model"] == f"single_{k}"), 2) for k in args.options},
               "random_accuracy_mean": round(statistics.fmean(r["random"]["accuracy_mean"] for r in joint_rows), 2),
               "random_accuracy_min": round(min(r["random"]["accuracy_min"] for r in joint_rows), 2),
               "random_accuracy_max": round(max(r["random"]["accuracy_max"] for r in joint_rows), 2),
               "random_accuracy_std_mean": round(statistics.fmean(r["random"]["accuracy_std"] for r in joint_rows), 2),
               "joint_step_vs_single": round(statistics.fmean(r["step_s"] for r in joint_rows)
                                             / statistics.fmean(r["step_s"] for r in rows if r["model"] != "joint"),
                                             2)}
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
