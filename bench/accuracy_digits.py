"""Accuracy per stage of the DIANA recipe on the bundled digits, digital-only and mixed analog / digital.

    python bench/accuracy_digits.py [--seeds 0 1 2] [--threads 2]

Per seed and core policy, one JSON line: test accuracy (%) of the float model, then after each stage (8-bit,
map_scales, pow2, HW-mapped, integer, onnxruntime on the exported twin), with the retraining of
examples/cifar10/configs/digits.yaml; then the mean over seeds of each figure.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.recipe import RecipeConfig, run_recipe
from quantlib.data import digits_loaders
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn

CONFIG = Path(__file__).resolve().parents[1] / "examples" / "cifar10" / "configs" / "digits.yaml"


def run(seed: int, analog: str, out_dir: Path) -> dict[str, float]:
    recipe = RecipeConfig.from_yaml(CONFIG)
    torch.manual_seed(seed)
    train, test = digits_loaders(recipe.batch_size, seed=seed)
    model = train_epochs(digits_cnn(), train, recipe.float_training.epochs, recipe.float_training.lr)
    history = {"float": accuracy(model, test)}
    dm = DianaModule.from_fp_model(model, analog=analog)
    result = run_recipe(dm, train, test, recipe, out_dir / f"{analog}-{seed}", "digits", progress=False)
    return {**history, **result.accuracy}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out_dir:
        for analog in ("none", "auto"):
            runs = []
            for seed in args.seeds:
                runs.append(run(seed, analog, Path(out_dir)))
                print(json.dumps({"analog": analog, "seed": seed, **{k: round(v, 2) for k, v in runs[-1].items()}}),
                      flush=True)
            mean = {k: round(statistics.mean(r[k] for r in runs), 2) for k in runs[0]}
            print(json.dumps({"analog": analog, "mean_over_seeds": mean,
                              "pow2_minus_float": round(mean["pow2"] - mean["float"], 2),
                              "onnxruntime_minus_float": round(mean["onnxruntime"] - mean["float"], 2)}), flush=True)


if __name__ == "__main__":
    main()
