"""``quantlib ptq``: a trained float model and data in; each configuration (method x weight bits x activation bits,
and, with the correction lists, x alpha x clusters x PCA dimensions) quantised post-training and evaluated (top-1,
top-5); a table and the best configuration printed, the table written as JSON and a PNG, the logits as CSV when
corrected. ``--sensitivity`` ranks the layers by the accuracy lost when each alone is quantised."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from quantlib import ptq
from quantlib.atomic_files import write_atomically
from quantlib.backends.onnx.integer_export import export_integer_onnx
from quantlib.backends.onnx.verify import verify_onnxruntime
from quantlib.checkpoint import build_architecture, checkpoint_from, float_model, is_checkpoint
from quantlib.cli.inputs import (
    EXIT_MISMATCH,
    EXIT_OK,
    VERIFY_INPUTS,
    UsageError,
    load_checkpoint_file,
    option,
    report_errors,
)
from quantlib.cli.plots import png, subplots
from quantlib.data.sources import DataSource, data_source
from quantlib.layer_overrides import LayerOverride, key_text, resolve_overrides
from quantlib.ptq.evaluation import collect_logits, top_k_accuracy
from quantlib.ptq.logit_correction import ClusterAffineCorrection
from quantlib.ptq.logits_analysis import results_folder, save_logits
from quantlib.ptq.registry import METHODS, method_help
from quantlib.ptq.sensitivity import sensitivity
from quantlib.training import train_epochs
from quantlib.verification import compare_fake_and_exact
from quantlib.zoo import ZOO
from quantlib.zoo.torchvision_weights import FACTORIES as TORCHVISION_FACTORIES
from quantlib.zoo.torchvision_weights import load_torchvision_state_dict

DATASETS = ("digits", "cifar10", "cifar100", "imagenet")
DIGITS_TRAIN_EPOCHS = 20

EPILOG = """examples:
  quantlib ptq
      the bundled digits: a digits CNN trained for 20 epochs, then AdaRound at W4A4
  quantlib ptq --method rtn adaround qdrop --n-bits-w 4 2 --n-bits-a 4 --param iters=500
      three methods at W4A4 and W2A4, AdaRound's and QDrop's iterations at 500
  quantlib ptq --checkpoint resnet18.pth --arch resnet18 --dataset imagenet --data-path /data/imagenet \\
      --method adaround --alpha-list 0.2 0.4 --num-clusters-list 32 64 --pca-dim-list 50 --max-eval-batches 20
      torchvision-format weights, with cluster affine correction of the logits
  quantlib ptq --sensitivity --method rtn --n-bits-w 2 --n-bits-a 4
      which layers lose the most when quantised alone
  quantlib ptq --n-bits-w 2 --override 'features.3:w_bits=4,a_bits=8' --override 'classifier:method=rtn'
      one layer at 4-bit weights and 8-bit input, the classifier rounded to nearest

exit codes: 0 ok; 2 usage error or unreadable input; 4 (--export-onnx) onnxruntime differs from the integer model."""


def parser() -> argparse.ArgumentParser:
    """The options of ``quantlib ptq``."""
    p = argparse.ArgumentParser(prog="quantlib ptq", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    option(p, "method", nargs="+", default=["adaround"], choices=list(METHODS), metavar="METHOD",
            help=f"PTQ method(s): {', '.join(METHODS)} (default: adaround); --quant_method too")
    p.add_argument("--quant-method", "--quant_method", dest="method", nargs="+", choices=list(METHODS),
                   help=argparse.SUPPRESS)
    option(p, "param", action="append", default=[], metavar="NAME=VALUE",
            help="a method parameter, for every chosen method that has it (repeatable); see --list-methods")
    option(p, "list-methods", action="store_true", help="list the methods with their parameters and exit")
    option(p, "arch", default="digits_cnn",
            help=f"zoo model ({', '.join(dict.fromkeys([*ZOO, *TORCHVISION_FACTORIES]))}) or module:callable "
                 f"(default: digits_cnn)")
    option(p, "checkpoint", type=Path, help="a float quantlib checkpoint, or a state dict of --arch (torchvision "
                                             "files fit resnet18, resnet50 and mobilenet_v2 key for key; "
                                             "{'state_dict': ...} and 'module.' prefixes are unwrapped); without it, "
                                             "--dataset digits trains the digits CNN first")
    option(p, "n-bits-w", type=int, nargs="+", default=[4], help="weight bits, 2..8 (default: 4)")
    option(p, "n-bits-a", type=int, nargs="+", default=[4], help="activation bits, 2..8 (default: 4)")
    option(p, "channel-wise", action=argparse.BooleanOptionalAction, default=True,
            help="one weight scale per output channel (default: on)")
    option(p, "disable-8bit-head-stem", action="store_true",
            help="quantise the first and the last layer at the chosen bits too (default: they stay at 8 bits)")
    option(p, "pow2", action="store_true", help="power-of-two scales and floor rounding (DIANA's numbers)")
    option(p, "asymmetric", action="store_true", help="weights and signed activations with a learned zero point "
                                                       "(default: symmetric about zero)")
    option(p, "override", action="append", default=[], metavar="LAYER:SETTINGS",
            help="per-layer settings (repeatable): LAYER is a module name, an fnmatch pattern, Conv2d or Linear; "
                 "SETTINGS are comma-separated w_bits=N, a_bits=N, per_channel=true|false, method=NAME or float, "
                 "e.g. --override 'fc:w_bits=8,a_bits=8' --override 'layer1.*:method=rtn'")
    option(p, "alpha-list", type=float, nargs="+", help="cluster affine correction: blends to try (in [0, 1])")
    option(p, "num-clusters-list", type=int, nargs="+", help="cluster affine correction: cluster counts (default 64)")
    option(p, "pca-dim-list", type=int, nargs="+", help="cluster affine correction: PCA dimensions (default 50)")
    option(p, "export-onnx", action="store_true",
            help="each configuration through the integer path (shifts with --pow2, else 24-bit multipliers), written "
                 "as <method>_w<W>a<A>.onnx in --out and checked in onnxruntime against the integer model (its top-1 "
                 "is the deployed model's)")
    option(p, "sensitivity", action="store_true",
            help="per layer, the accuracy with only that layer quantised (each method and bit-width), sorted")
    option(p, "seed", type=int, default=0, help="random seed of data order, methods and correction (default: 0)")
    option(p, "batch-size", type=int, default=64, help="batch size (default: 64)")
    option(p, "calib-samples", type=int, default=1024, help="calibration samples from the training set "
                                                                "(default: 1024)")
    option(p, "max-eval-batches", type=int, help="evaluate on the first N test batches only (default: all)")
    option(p, "dataset", choices=DATASETS, help="digits (bundled, the default), or cifar10 / cifar100 / imagenet "
                                                 "read from --data-path")
    option(p, "data-path", type=Path, help="the data folder (cifar-10-batches-py, cifar-100-python, or an image "
                                            "folder with train/ and val/); without --dataset it is an image folder")
    option(p, "out", type=Path, default=Path("ptq_results"), help="output folder (default: ptq_results)")
    option(p, "quiet", action="store_true", help="no progress bars")
    return p


@dataclasses.dataclass(frozen=True)
class Configuration:
    """One quantisation to evaluate."""

    method: str
    w_bits: int
    a_bits: int


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.list_methods:
        print(method_help())
        return EXIT_OK
    return report_errors("quantlib ptq", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Check every option first, then quantise and evaluate each configuration; prints and writes the results."""
    torch.manual_seed(args.seed)
    params = method_params(args.method, args.param, args.seed, progress=not args.quiet)
    configurations = [Configuration(*c) for c in itertools.product(args.method, args.n_bits_w, args.n_bits_a)]
    overrides = parse_overrides(args.override)
    options = {c: ptq.PTQOptions(c.w_bits, c.a_bits, args.channel_wise, not args.disable_8bit_head_stem, args.pow2,
                                 not args.asymmetric, overrides) for c in configurations}  # bits 2..8 checked
    for c in configurations:
        ptq.get_method(c.method, **params[c.method]).check(options[c])  # every refusal before anything runs
    corrections = correction_grid(args)
    if args.export_onnx:
        _check_exportable(args, overrides)
    for name in ("batch_size", "calib_samples", "max_eval_batches"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} {value} must be a positive integer.")
    source = data_source(data_spec(args), batch_size=args.batch_size)
    model, arch = float_model_of(args, source)
    resolve_overrides(model, overrides)  # a layer that does not exist is refused before any training
    if args.checkpoint is None:
        model = train_epochs(model, source.train, DIGITS_TRAIN_EPOCHS, lr=3e-3).eval()
        print(f"no --checkpoint: trained {arch} on the digits for {DIGITS_TRAIN_EPOCHS} epochs")
    calibration = source.calibration_samples(args.calib_samples)
    float_logits, labels = collect_logits(model, source.test, args.max_eval_batches)
    float_calibration = np.concatenate([model(x).detach().numpy() for x in calibration])
    reference = {"top1": top_k_accuracy(float_logits, labels, 1), "top5": top_k_accuracy(float_logits, labels, 5)}
    print(f"float {arch}: top-1 {reference['top1']:.2f} %, top-5 {reference['top5']:.2f} % on {len(labels)} "
          f"test samples; calibration on {sum(len(x) for x in calibration)} training samples")
    rows = []
    for c in configurations:
        start = time.perf_counter()
        quantised = ptq.get_method(c.method, **params[c.method]).quantize(model, calibration, options[c])
        seconds = time.perf_counter() - start
        exported = {}
        if args.export_onnx:  # what is evaluated is then the deployed model
            exported, quantised = export_onnx(quantised, calibration,
                                              args.out / f"{c.method}_w{c.w_bits}a{c.a_bits}.onnx")
        logits, _ = collect_logits(quantised, source.test, args.max_eval_batches)
        rows.append({**_row(c, None, logits, labels, seconds), **exported})
        print(_line(rows[-1]), flush=True)
        if corrections:
            calibration_logits = np.concatenate([quantised(x).detach().numpy() for x in calibration])
            for alpha, clusters, pca_dim in corrections:
                correction = ClusterAffineCorrection(clusters, pca_dim, alpha, args.seed)
                corrected = correction.fit(calibration_logits, float_calibration).apply(logits)
                rows.append(_row(c, (alpha, clusters, pca_dim), corrected, labels, seconds))
                print(_line(rows[-1]), flush=True)
                folder = results_folder(args.out, _file_name(arch), c.w_bits, c.a_bits, alpha, clusters, pca_dim)
                save_logits(folder, _file_name(arch), c.w_bits, c.a_bits, args.seed,
                            {"quantized": logits, "fullprecision": float_logits, "corrected": corrected}, labels)
        if args.sensitivity:
            report_sensitivity(model, calibration, source, c, options[c], params[c.method], args)
    best = max(rows, key=lambda r: (r["top1"], r["top5"]))
    print(summary(reference, rows, best))
    write_results(args.out, arch, reference, rows, best)
    return EXIT_MISMATCH if any(r.get("onnx_mismatches") for r in rows) else EXIT_OK


def method_params(methods: list[str], given: list[str], seed: int, progress: bool) -> dict[str, dict[str, Any]]:
    """Per chosen method, the ``--param NAME=VALUE`` it has (typed as its default), its seed and progress bars; a
    parameter no chosen method has is refused."""
    fields = {m: {f.name: f for f in dataclasses.fields(METHODS[m].Params)} for m in methods}
    params: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for m in methods:
        for name, value in (("seed", seed), ("progress", progress)):
            if name in fields[m]:
                params[m][name] = value
    for text in given:
        name, sep, value = text.partition("=")
        owners = [m for m in methods if name in fields[m]]
        if not sep or not owners:
            known = sorted({f for m in methods for f in fields[m]} - {"seed", "progress"})
            raise UsageError(f"--param {text!r}: give NAME=VALUE with NAME a parameter of {methods}: {known}.")
        for m in owners:
            params[m][name] = _typed(value, fields[m][name].default, f"--param {text}")
    for m in methods:
        ptq.get_method(m, **params[m])  # refuses values out of range now, before the model is touched
    return params


def _typed(text: str, default: Any, where: str) -> Any:
    """``text`` as the type of ``default``."""
    kind = type(default)
    if kind is bool:
        if text.lower() not in ("true", "false", "1", "0"):
            raise UsageError(f"{where}: give true or false.")
        return text.lower() in ("true", "1")
    try:
        return kind(text)
    except ValueError as exc:
        raise UsageError(f"{where}: {text!r} is not a {kind.__name__} (default {default!r}).") from exc


OVERRIDE_TYPES = {"Conv2d": nn.Conv2d, "Linear": nn.Linear}


def parse_overrides(texts: list[str]) -> dict[str | type, LayerOverride]:
    """``--override LAYER:SETTINGS`` as overrides (``quantlib.layer_overrides``); each setting checked now."""
    fields = {f.name: f for f in dataclasses.fields(LayerOverride)}
    overrides: dict[str | type, LayerOverride] = {}
    for text in texts:
        layer, sep, settings = text.rpartition(":")
        if not sep or not layer or not settings:
            raise UsageError(f"--override {text!r}: give LAYER:SETTINGS, e.g. 'fc:w_bits=8,a_bits=8' or "
                             f"'layer1.*:float'.")
        values: dict[str, Any] = {}
        for setting in settings.split(","):
            name, eq, value = setting.strip().partition("=")
            if name == "float" and not eq:
                values["keep_float"] = True
            elif eq and name in ("w_bits", "a_bits"):
                values[name] = _typed(value, 0, f"--override {text}")
            elif eq and name == "per_channel":
                values[name] = _typed(value, True, f"--override {text}")
            elif eq and name == "method":
                if value not in METHODS:
                    raise UsageError(f"--override {text}: method {value!r} is not one of {list(METHODS)}.")
                values[name] = value
            else:
                allowed = [f for f in fields if f != "keep_float"] + ["float"]
                raise UsageError(f"--override {text}: {setting.strip()!r} is not a setting; give NAME=VALUE with NAME "
                                 f"in {allowed[:-1]}, or 'float'.")
        key = OVERRIDE_TYPES.get(layer, layer)
        try:
            overrides[key] = LayerOverride.from_value(values, key)
        except ValueError as exc:
            raise UsageError(f"--override {text}: {exc}") from exc
    return overrides


def correction_grid(args: argparse.Namespace) -> list[tuple[float, int, int]]:
    """The (alpha, clusters, PCA dimensions) to try, empty without ``--alpha-list``; each value checked."""
    if args.alpha_list is None:
        if args.num_clusters_list or args.pca_dim_list:
            raise UsageError("--num-clusters-list and --pca-dim-list need --alpha-list (the blends to try).")
        return []
    grid = list(itertools.product(args.alpha_list, args.num_clusters_list or [ClusterAffineCorrection.num_clusters],
                                  args.pca_dim_list or [ClusterAffineCorrection.pca_dim]))
    for alpha, clusters, pca_dim in grid:
        ClusterAffineCorrection(clusters, pca_dim, alpha)  # refuses alpha outside [0, 1] and counts below 1
    return grid


def data_spec(args: argparse.Namespace) -> str:
    """The data spec of ``--dataset`` / ``--data-path``."""
    dataset = args.dataset or ("imagenet" if args.data_path else "digits")
    if dataset == "digits":
        if args.data_path:
            raise UsageError("--dataset digits is bundled and takes no --data-path.")
        return "digits"
    if not args.data_path:
        raise UsageError(f"--dataset {dataset} needs --data-path (the folder holding it).")
    return f"{dataset}:{args.data_path}"


def float_model_of(args: argparse.Namespace, source: DataSource) -> tuple[nn.Module, str]:
    """The float model of ``--checkpoint`` and its architecture's name; without one (only the digits CNN on the
    digits), a fresh digits CNN, to be trained."""
    arch = args.arch
    if args.checkpoint is None:
        if source.spec != "digits" or arch != "digits_cnn":
            raise UsageError(f"--arch {arch} on {source.spec} needs --checkpoint: PTQ quantises a trained model "
                             f"(only the digits CNN on the bundled digits is trained here when none is given).")
        return ZOO["digits_cnn"].factory(num_classes=source.num_classes), arch
    loaded = load_checkpoint_file(args.checkpoint, trust_pickle=False)
    if is_checkpoint(loaded):
        checkpoint = checkpoint_from(loaded, str(args.checkpoint))
        return float_model(checkpoint), checkpoint.arch
    factory = ZOO[arch].factory if arch in ZOO else TORCHVISION_FACTORIES.get(arch)
    model = factory(num_classes=source.num_classes) if factory is not None else build_architecture(arch)
    try:
        load_torchvision_state_dict(model, loaded)
    except ValueError as exc:
        raise UsageError(f"Checkpoint '{args.checkpoint}' does not fit --arch {arch} with {source.num_classes} "
                         f"classes: {exc}") from exc
    return model.eval(), arch


def report_sensitivity(model: nn.Module, calibration: list[torch.Tensor], source: DataSource, c: Configuration,
                       options: ptq.PTQOptions, params: dict[str, Any], args: argparse.Namespace) -> None:
    """Print and write the per-layer sensitivity of one configuration (its options: bits, overrides, ...)."""
    test = list(itertools.islice(source.test, args.max_eval_batches))
    rows = sensitivity(model, calibration, test, c.method, options, **params)
    print(f"sensitivity, {c.method} W{c.w_bits}A{c.a_bits}, one layer quantised at a time (most sensitive first):")
    width = max(len(r.layer) for r in rows)
    for r in rows:
        print(f"  {r.layer:<{width}}  top-1 {r.accuracy:6.2f} %  drop {r.drop:+6.2f}")
    name = f"sensitivity_{c.method}_w{c.w_bits}a{c.a_bits}.json"
    write_atomically(args.out / name, json.dumps([dataclasses.asdict(r) for r in rows], indent=2) + "\n")


def _check_exportable(args: argparse.Namespace, overrides: dict[str | type, LayerOverride]) -> None:
    """``--export-onnx``'s needs, checked before any work: no float layers."""
    floats = [key_text(key) for key, override in overrides.items() if override.keep_float]
    if floats:
        raise UsageError(f"--export-onnx: the overrides keep {floats} in float, and an integer network has no float "
                         f"layers; drop 'float' from them.")


def export_onnx(quantised: nn.Module, calibration: list[torch.Tensor], path: Path) -> tuple[dict[str, Any], nn.Module]:
    """Deploy a PTQ result, write its integer ONNX to ``path`` and compare onnxruntime with the integer model, and
    the fake-quantised model's requantised integers with the deployed ones, on the calibration inputs; the row's
    fields and the deployed model (the exact twin: the integer model's values times their scales)."""
    x = torch.cat(calibration)[:VERIFY_INPUTS]
    flow = ptq.deploy(quantised, x[:1])
    path.parent.mkdir(parents=True, exist_ok=True)
    exported = export_integer_onnx(flow.integer, x[:1], path)
    comparisons = verify_onnxruntime(flow.integer, exported, x)
    fake_vs_integer = sum(c.mismatches for c in compare_fake_and_exact(flow.fake, flow.exact, x))
    return {"onnx": str(path), "onnx_mismatches": sum(c.mismatches for c in comparisons),
            "onnx_values": sum(c.elements for c in comparisons),
            "fake_vs_integer_mismatches": fake_vs_integer}, flow.exact


def _row(c: Configuration, correction: tuple[float, int, int] | None, logits: np.ndarray, labels: np.ndarray,
         seconds: float) -> dict[str, Any]:
    alpha, clusters, pca_dim = correction or (None, None, None)
    return {"method": c.method, "w_bits": c.w_bits, "a_bits": c.a_bits, "alpha": alpha, "num_clusters": clusters,
            "pca_dim": pca_dim, "top1": round(top_k_accuracy(logits, labels, 1), 2),
            "top5": round(top_k_accuracy(logits, labels, 5), 2), "seconds": round(seconds, 2)}


def _label(row: dict[str, Any]) -> str:
    text = f"{row['method']} W{row['w_bits']}A{row['a_bits']}"
    if row["alpha"] is not None:
        text += f" + correction (alpha {row['alpha']}, {row['num_clusters']} clusters, PCA {row['pca_dim']})"
    return text


def _line(row: dict[str, Any]) -> str:
    text = f"{_label(row)}: top-1 {row['top1']:.2f} %, top-5 {row['top5']:.2f} % ({row['seconds']:.2f} s)"
    if "onnx" in row:
        text += (f"; {row['onnx']}: onnxruntime vs integer {row['onnx_mismatches']} mismatches in "
                 f"{row['onnx_values']} values, fake vs integer {row['fake_vs_integer_mismatches']}")
    return text


def summary(reference: dict[str, float], rows: list[dict[str, Any]], best: dict[str, Any]) -> str:
    """The table of every configuration and the best one."""
    width = max(len(_label(r)) for r in rows)
    lines = ["", f"{'configuration':<{width}}  top-1 %  top-5 %  drop  seconds",
             f"{'float':<{width}}  {reference['top1']:7.2f}  {reference['top5']:7.2f}"]
    for r in rows:
        drop = round(reference["top1"] - r["top1"], 2) + 0.0  # + 0.0: no "-0.00"
        lines.append(f"{_label(r):<{width}}  {r['top1']:7.2f}  {r['top5']:7.2f}  {drop:+5.2f}  {r['seconds']:7.2f}")
    lines.append(f"best: {_label(best)}: top-1 {best['top1']:.2f} %")
    return "\n".join(lines)


def _file_name(arch: str) -> str:
    return arch.rpartition(":")[2] or arch


def write_results(out: Path, arch: str, reference: dict[str, float], rows: list[dict[str, Any]],
                  best: dict[str, Any]) -> None:
    """``ptq_results.json`` (float, every configuration, the best) and ``ptq_accuracy.png`` in ``out``."""
    table = {"arch": arch, "float": reference, "configurations": rows, "best": best}
    write_atomically(out / "ptq_results.json", json.dumps(table, indent=2) + "\n")
    write_atomically(out / "ptq_accuracy.png", accuracy_plot(reference["top1"], rows))
    print(f"wrote {out / 'ptq_results.json'} and {out / 'ptq_accuracy.png'}")


def accuracy_plot(float_top1: float, rows: list[dict[str, Any]]) -> bytes:
    """PNG: top-1 per bit-width, one bar per method (and corrected variant), the float accuracy as a line."""
    bits = list(dict.fromkeys(f"W{r['w_bits']}A{r['a_bits']}" for r in rows))
    values = {(_series(r), f"W{r['w_bits']}A{r['a_bits']}"): r["top1"] for r in rows}
    series = list(dict.fromkeys(name for name, _ in values))
    figure, axes = subplots(figsize=(4.0 + max(4.0, 0.6 * len(bits) * len(series)), 4))
    width = 0.8 / len(series)
    for i, name in enumerate(series):
        xs = [j + i * width for j, b in enumerate(bits) if (name, b) in values]
        axes.bar(xs, [values[(name, b)] for b in bits if (name, b) in values], width, label=name)
    axes.axhline(float_top1, color="black", linestyle="--", label=f"float {float_top1:.2f} %")
    axes.set_xticks([j + 0.4 - width / 2 for j in range(len(bits))], bits)
    axes.set_ylabel("top-1 accuracy (%)")
    axes.set_ylim(0, 100)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return png(figure)


def _series(row: dict[str, Any]) -> str:
    """A plot series: the method, with its correction settings when corrected."""
    if row["alpha"] is None:
        return row["method"]
    return f"{row['method']} +corr a{row['alpha']} k{row['num_clusters']} d{row['pca_dim']}"


if __name__ == "__main__":
    sys.exit(main())
