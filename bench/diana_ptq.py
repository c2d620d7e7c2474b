"""A mixed analog / digital DIANA model without retraining: the bundled digits CNN with its eligible layers on the
analog core (ternary weights, 6-bit ADC), taken through calibrate, map_scales and clip_scales_pow2, then either left
as it is, refined by a PTQ method (``DianaModule.refine_weights``), or retrained for comparison.

    python bench/diana_ptq.py [--seeds 0 1 2] [--retrain-epochs 5] [--threads 2]

Per seed the float CNN is trained for 20 epochs; calibration on 8 training batches of 64; test top-1 (%) on the 359
test digits. One JSON line per (variant, seed) with the seconds it took, then one per variant with the means.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch

from quantlib.backends.diana import DianaModule
from quantlib.backends.diana.diana_module import PTQ_WEIGHT_METHODS
from quantlib.data import digits_loaders
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn


def variant(name: str, model: torch.nn.Module, dm: DianaModule, calibration: list, train, epochs: int
            ) -> torch.nn.Module:
    """The model of one variant: the float model, the pow2 DianaModule, refined by a method, or retrained."""
    if name == "float":
        return model
    if name == "pow2 as calibrated":
        return dm
    if name in PTQ_WEIGHT_METHODS:
        return copy.deepcopy(dm).refine_weights(calibration, name)
    return train_epochs(copy.deepcopy(dm), train, epochs=epochs, lr=1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--retrain-epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, list[dict]] = {}
    for seed in args.seeds:
        torch.manual_seed(seed)
        train, test = digits_loaders(seed=seed)
        model = train_epochs(digits_cnn(), train, epochs=20, lr=3e-3).eval()
        calibration = [x for x, _ in list(train)[:8]]
        dm = DianaModule.from_fp_model(model, calibration[0][:1], analog="auto")
        dm.calibrate(calibration).map_scales(calibration).clip_scales_pow2()
        names = ["float", "pow2 as calibrated", *PTQ_WEIGHT_METHODS, f"retrained {args.retrain_epochs} epochs"]
        for name in names:
            start = time.perf_counter()
            result = variant(name, model, dm, calibration, train, args.retrain_epochs)
            row = {"variant": name, "seed": seed, "analog_layers": dm.choice.analog,
                   "accuracy": round(accuracy(result, test), 2), "seconds": round(time.perf_counter() - start, 2)}
            results.setdefault(name, []).append(row)
            print(json.dumps(row), flush=True)
    for name, rows in results.items():
        print(json.dumps({"variant": name, "accuracy_mean": round(statistics.mean(r["accuracy"] for r in rows), 2),
                          "seconds_mean": round(statistics.mean(r["seconds"] for r in rows), 2)}), flush=True)


if __name__ == "__main__":
    main()
