"""quantlib demo on the bundled digits: train a small CNN, canonicalise it editor by editor (checking that each
stage computes what the float model computes), fake-quantise it to 8 bits, map its scales to powers of two, turn it
into an integer network, export standard integer ONNX and check onnxruntime against it.

    python examples/demo.py [--epochs 15] [--out out/demo]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from quantlib.backends.onnx import export_integer_onnx, run_onnxruntime, verify_onnxruntime
from quantlib.calibration import calibrate
from quantlib.data import digits_loaders
from quantlib.editors.canonicalise import canonicalisation_editors
from quantlib.editors.fake2true import integerise, to_exact
from quantlib.fake_quantisation import quantize
from quantlib.graphs import trace
from quantlib.scales import clip_scales_pow2, quantise_biases
from quantlib.training import accuracy, train_epochs
from quantlib.zoo import digits_cnn


def onnxruntime_accuracy(model, loader) -> float:
    correct = total = 0
    for x, y in loader:
        logits = run_onnxruntime(model, x.numpy())["output_0"]
        correct += int((torch.from_numpy(np.asarray(logits)).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def show_canonicalisation(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Trace, then apply the canonicalisation editors one by one, printing each stage and its float-equivalence."""
    with torch.no_grad():
        reference = model(x)
    gm = trace(model)
    print(f"\n{'canonicalisation stage':24s} nodes  functional  max rel. diff to float")
    print(f"{'trace':24s} {len(gm.graph.nodes):5d}  {_functional(gm):10d}")
    for editor in canonicalisation_editors():
        gm = editor(gm)
        with torch.no_grad():
            diff = float((gm(x) - reference).abs().max() / reference.abs().max())
        print(f"{editor!r:24s} {len(gm.graph.nodes):5d}  {_functional(gm):10d}  {diff:.1e}")


def _functional(gm: torch.fx.GraphModule) -> int:
    return sum(n.op in ("call_function", "call_method") for n in gm.graph.nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    start = time.perf_counter()

    train, test = digits_loaders(seed=0)
    print(f"digits: {len(train.dataset)} training and {len(test.dataset)} test images (scikit-learn's load_digits)")
    model = train_epochs(digits_cnn(), train, args.epochs, lr=3e-3)
    show_canonicalisation(model, next(iter(test))[0])
    x = next(iter(test))[0][:2]
    rows = [("float", accuracy(model, test))]

    fake = calibrate(quantize(model, x), [b for b, _ in list(train)[:8]])
    rows.append(("8-bit fake-quantised", accuracy(fake, test)))
    quantise_biases(clip_scales_pow2(fake), x)
    rows.append(("power-of-two scales", accuracy(fake, test)))
    exact = to_exact(fake, x)
    rows.append(("exact (requantisers)", accuracy(exact, test)))
    integer = integerise(exact)
    rows.append(("integer GraphModule", accuracy(integer, test)))
    path = args.out / "digits_cnn_integer.onnx"
    exported = export_integer_onnx(integer, x, path)
    rows.append(("onnxruntime", onnxruntime_accuracy(exported.model, test)))

    print(f"\n{'stage':24s} test accuracy")
    for stage, acc in rows:
        print(f"{stage:24s} {acc:6.2f} %")
    report = verify_onnxruntime(integer, exported, next(iter(test))[0])
    mismatches = sum(c.mismatches for c in report)
    elements = sum(c.elements for c in report)
    print(f"\nonnxruntime vs integer model: {mismatches} mismatching of {elements} elements over {len(report)} "
          f"layers and outputs")
    print(f"integer ONNX written to {path} ({path.stat().st_size} bytes); {time.perf_counter() - start:.1f} s in all")
    if mismatches:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
