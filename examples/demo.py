"""quantlib demo on the bundled digits (scikit-learn's load_digits): train a small CNN, canonicalise it (each editor
checked against the float model), then run DIANA's staged recipe with analog and digital layers and short retraining
per stage, export for DIANA, check onnxruntime on the exported twin, and print the accuracy of every stage.

    python examples/demo.py [--analog auto|none] [--out out/demo]

Epochs and learning rates per stage: examples/cifar10/configs/digits.yaml.

Writes ``<out>/digits_cnn_diana/`` (DORY ONNX, twin, goldens, config, report) and ``<out>/demo.png`` (accuracy per
stage; bits and scales per layer).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.recipe import RecipeConfig, run_recipe
from quantlib.backends.diana.report import LayerReport, format_report
from quantlib.data import digits_loaders
from quantlib.editors.canonicalise import canonicalisation_editors
from quantlib.graphs import trace
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn

CONFIG = Path(__file__).parent / "cifar10" / "configs" / "digits.yaml"
STAGE_NAMES = {"float": "float", "calibrated": "8-bit", "scales_mapped": "map_scales", "pow2": "pow2",
               "hw_mapped": "HW-mapped", "integer": "integer", "onnxruntime": "onnxruntime (twin)"}


def show_canonicalisation(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Trace, then apply the canonicalisation editors one by one, printing each stage and its float-equivalence."""
    with torch.no_grad():
        reference = model(x)
    gm = trace(model)
    print(f"\n{'canonicalisation stage':24s} nodes  max rel. diff to float")
    print(f"{'trace':24s} {len(gm.graph.nodes):5d}")
    for editor in canonicalisation_editors():
        gm = editor(gm)
        with torch.no_grad():
            diff = float((gm(x) - reference).abs().max() / reference.abs().max())
        print(f"{editor!r:24s} {len(gm.graph.nodes):5d}  {diff:.1e}")


def plot(path: Path, history: dict[str, float], report: list[LayerReport]) -> None:
    """Accuracy per stage, and per layer the bits and the scale exponents of weights, input, ADC and output."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_acc, ax_bits, ax_scales) = plt.subplots(1, 3, figsize=(16, 4.5))
    names = [STAGE_NAMES[s] for s in history]
    bars = ax_acc.bar(names, list(history.values()), color="tab:blue")
    ax_acc.bar_label(bars, fmt="%.2f", fontsize=8)
    ax_acc.set_ylim(min(history.values()) - 5, 100)
    ax_acc.set_ylabel("test accuracy (%)")
    ax_acc.set_title("digits CNN, accuracy per stage")
    ax_acc.tick_params(axis="x", rotation=30)
    layers = [row for row in report if row.bits]
    labels = [f"{row.layer}\n({row.core})" for row in layers]
    positions = range(len(layers))
    series = (("weights", "tab:orange"), ("input", "tab:green"), ("adc", "tab:red"), ("output", "tab:purple"))
    for offset, (key, colour) in enumerate(series):
        ax_bits.bar([p + 0.2 * (offset - 1.5) for p in positions], [row.bits.get(key, 0) for row in layers], 0.2,
                    label=key, color=colour)
        exponents = [row.scales.get(key) for row in layers]
        ax_scales.plot([p + 0.06 * (offset - 1.5) for p, k in zip(positions, exponents, strict=True)
                        if isinstance(k, int)], [k for k in exponents if isinstance(k, int)], "o", label=key,
                       color=colour)
    for ax, title in ((ax_bits, "bits per layer"), (ax_scales, "scale exponent k (scale = 2^k)")):
        ax.set_xticks(list(positions), labels, fontsize=7)
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--analog", choices=["auto", "none"], default="auto")
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()

    recipe = RecipeConfig.from_yaml(CONFIG)
    train, test = digits_loaders(recipe.batch_size, seed=0)
    print(f"digits: {len(train.dataset)} training and {len(test.dataset)} test images (scikit-learn's load_digits)")
    model = train_epochs(digits_cnn(), train, recipe.float_training.epochs, recipe.float_training.lr)
    show_canonicalisation(model, next(iter(test))[0])
    float_accuracy = accuracy(model, test)

    dm = DianaModule.from_fp_model(model, analog=args.analog)
    cores = list(dm.cores.values())
    print(f"\nDIANA recipe: {cores.count('digital')} digital and {cores.count('analog')} analog layers; retraining "
          f"epochs per stage {({k: v.epochs for k, v in recipe.stages.items()})}")
    result = run_recipe(dm, train, test, recipe, args.out / "digits_cnn_diana", "digits_cnn", progress=False)
    history = {"float": float_accuracy, **result.accuracy}

    print(f"\n{'stage':20s} test accuracy")
    for stage, top1 in history.items():
        print(f"{STAGE_NAMES[stage]:20s} {top1:6.2f} %")
    print()
    print(format_report(dm.report()))
    export = result.export
    print(f"\n{export.summary()}")
    plot(args.out / "demo.png", history, dm.report())
    print(f"DIANA files in {export.out_dir}/; plot in {args.out / 'demo.png'}; {time.perf_counter() - start:.1f} s "
          f"in all")
    if export.mismatches or history["onnxruntime"] != history["integer"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
