"""``quantlib train``: joint mixed-precision training from a YAML configuration (docs/mixed-precision.md).

Every key of the configuration and every option is checked before any data is read. Training runs through the
shared loop (device, checkpoints and resume, progress bars, torchrun); at the end the validation the configuration
names, a table per uniform bit-width, ``train_results.json``, ``train_accuracy.png`` and the trained model
(``model.pt``) are written to ``--out``. ``--export-config`` exports one configuration through the integer path.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from quantlib import mixed_precision as mp
from quantlib.atomic_files import write_atomically
from quantlib.backends.onnx.integer_export import export_integer_onnx
from quantlib.backends.onnx.verify import verify_onnxruntime
from quantlib.checkpoint import build_architecture
from quantlib.cli.inputs import EXIT_MISMATCH, EXIT_OK, VERIFY_INPUTS, UsageError, option, report_errors
from quantlib.cli.plots import png, subplots
from quantlib.data.sources import data_source
from quantlib.distributed import is_main_process
from quantlib.mixed_precision.config import MixedPrecisionConfig, load_config
from quantlib.mixed_precision.export import check_exportable, deploy_configuration
from quantlib.training import evaluate, fit
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact
from quantlib.zoo import ARCHITECTURES

EPILOG = """examples:
  quantlib train --yaml-path examples/mixed_precision/digits.yaml
  quantlib train --yaml-path cfg.yaml --quantization-method dorefa --model resnet --model-variant resnet18 \\
      --data-path data/cifar-10-batches-py --epochs 30 --device cuda
  quantlib train --yaml-path cfg.yaml --epochs 0 --resume --export-config '{"features.0": 4, ...}'

exit codes: 0 ok; 2 bad configuration or option; 4 (--export-config) onnxruntime differs from the integer model."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="quantlib train", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    option(p, "yaml-path", required=True, type=Path, help="the YAML configuration")
    option(p, "quantization-method", help="the method block of quantization to use (optional if there is one)")
    option(p, "model", help="model family or zoo name (overrides model.name)")
    option(p, "model-variant", help="the zoo model of the family, e.g. resnet18 (overrides model.name)")
    option(p, "data-path", help="the data set's folder (overrides data.path)")
    option(p, "epochs", type=int, help="overrides training.epochs")
    option(p, "device", choices=["cpu", "cuda", "auto"], help="overrides training.device")
    option(p, "seed", type=int, help="overrides training.seed (and seeds the random configurations)")
    option(p, "checkpoint-dir", type=Path, help="overrides training.checkpoint_dir (a checkpoint every epoch)")
    option(p, "resume", action="store_true", help="resume from the checkpoint in the checkpoint folder")
    option(p, "export-config", help="after training, export this configuration: JSON {layer: bits}, or "
                                    "'uniform:K'; written as configuration.onnx in --out and checked in onnxruntime")
    option(p, "out", type=Path, default=Path("train_results"), help="output folder (default: train_results)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    return report_errors("quantlib train", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    """Check everything, train, validate, write the results (and export a configuration)."""
    config = load_config(args.yaml_path, args.quantization_method, _training_overrides(args))
    method = config.method
    float_model = _model(args, config)
    model = mp.switchable(float_model, method.bitwidth_options, method.weight_quantization,
                          method.activation_quantization, method.switchable_clipping,
                          method.sat_weight_normalization, method.batchnorm)
    export = _export_config(args.export_config, model)  # refused before training, not after
    seed = config.training.seed or 0
    trained, loss = _training(model, config)
    source = data_source(_data_spec(args, config), batch_size=config.batch_size)
    if export is not None:
        check_exportable(float_model, next(iter(source.train))[0][:1])
    result = fit(trained, source.train, config.training, loss=loss)
    if not is_main_process():
        return EXIT_OK
    model.cpu().eval()
    recalibration = (source.train, method.recalibration_batches) if method.batchnorm == "recalibrate" else None
    results = validate(model, source.test, config, torch.Generator().manual_seed(seed + 1), recalibration)
    results["training"] = {"epochs": result.epoch, "train_loss": result.train_loss, "seconds": result.seconds}
    args.out.mkdir(parents=True, exist_ok=True)
    print(summary(results))
    code = EXIT_OK
    if export is not None:
        mp.apply_bitwidth_config(model, export)
        if recalibration is not None:
            mp.recalibrate_batchnorm(model, *recalibration)
        results["export"] = export_configuration(model, source, args.out / "configuration.onnx")
        print(f"exported {results['export']['onnx']}: accuracy {results['export']['accuracy']:.2f} % (switchable "
              f"model {results['export']['switchable_accuracy']:.2f} %); onnxruntime vs integer "
              f"{results['export']['onnx_mismatches']} mismatches in {results['export']['onnx_values']} values")
        code = EXIT_MISMATCH if results["export"]["onnx_mismatches"] else EXIT_OK
    write_atomically(args.out / "train_results.json", json.dumps(results, indent=2) + "\n")
    write_atomically(args.out / "train_accuracy.png", accuracy_plot(results))
    torch.save({"state_dict": model.state_dict(), "config": str(config.path),
                "method": config.method_name}, args.out / "model.pt.tmp")
    (args.out / "model.pt.tmp").replace(args.out / "model.pt")
    print(f"wrote {args.out / 'train_results.json'}, {args.out / 'train_accuracy.png'} and {args.out / 'model.pt'}")
    return code


def _training_overrides(args: argparse.Namespace) -> dict[str, Any]:
    given = {"epochs": args.epochs, "device": args.device, "seed": args.seed, "checkpoint_dir": args.checkpoint_dir}
    overrides = {k: (str(v) if isinstance(v, Path) else v) for k, v in given.items() if v is not None}
    if args.resume:
        overrides["resume"] = True
    return overrides


def _model(args: argparse.Namespace, config: MixedPrecisionConfig) -> nn.Module:
    name = args.model_variant or args.model or config.model
    if ":" in name:
        return build_architecture(name, config.model_kwargs)
    if name not in ARCHITECTURES:
        raise UsageError(f"Model '{name}' is neither a zoo model ({sorted(ARCHITECTURES)}) nor 'module:callable'; "
                         f"for --model resnet give --model-variant (resnet8, resnet18, resnet1d18, ...).")
    try:
        return ARCHITECTURES[name](**config.model_kwargs)
    except TypeError as error:
        raise UsageError(f"{config.path}: model.kwargs {config.model_kwargs} do not fit model '{name}': "
                         f"{error}.") from error


def _data_spec(args: argparse.Namespace, config: MixedPrecisionConfig) -> str:
    if args.data_path is None:
        return config.data_spec()
    if config.dataset == "digits":
        raise UsageError("--data-path is given but the configuration's data.dataset is digits (bundled, no path).")
    return f"{config.dataset}:{args.data_path}"


def _training(model: nn.Module, config: MixedPrecisionConfig):
    """The module to train and its loss, as the configuration's training method says. The configurations are drawn
    from torch's global generator, which ``fit`` seeds alike on every rank and keeps in its checkpoints, so that a
    resumed run draws what the uninterrupted one would have."""
    method = config.method
    if method.training_method == "joint_quantization":
        return mp.joint_quantization(model, method.bitwidth_options, config.joint_quantization_batch_size)
    if method.training_method == "recursive_distillation":
        return mp.recursive_distillation(model, method.bitwidth_options, config.joint_quantization_batch_size)
    return mp.single_precision(model, method.bitwidth_options[0])


def _export_config(text: str | None, model: nn.Module) -> dict[str, int] | None:
    """The configuration ``--export-config`` names, checked against the model (UsageError otherwise)."""
    if text is None:
        return None
    layers = mp.switchable_layers(model)
    if text.startswith("uniform:"):
        bits = text.partition(":")[2]
        if not bits.isdecimal():
            raise UsageError(f"--export-config {text!r}: give uniform:K with K a bit-width.")
        wanted = {name: (int(bits) if len(m.options) > 1 else m.options[0]) for name, m in layers.items()}
    else:
        try:
            wanted = json.loads(text)
        except json.JSONDecodeError as error:
            raise UsageError(f"--export-config is not JSON ({error}); give {{\"layer\": bits, ...}} or "
                             f"uniform:K.") from error
    current = mp.bitwidth_config(model)
    try:
        mp.apply_bitwidth_config(model, wanted)
    except ValueError as error:
        raise UsageError(f"--export-config: {error}") from error
    finally:
        mp.apply_bitwidth_config(model, current)
    full = [name for name, bits in wanted.items() if bits == mp.layers.FULL_PRECISION]
    if full:
        raise UsageError(f"--export-config: layers {full} at 32 bits (full precision) have no integer form.")
    return wanted


def validate(model: nn.Module, loader, config: MixedPrecisionConfig, generator: torch.Generator,
             recalibration) -> dict[str, Any]:
    """The configured validation and the table per uniform bit-width, as plain values."""
    method = config.method
    results: dict[str, Any] = {"config": str(config.path), "method": config.method_name,
                               "bitwidth_options": list(method.bitwidth_options),
                               "training_method": method.training_method,
                               "validation_function": method.validation_function, "batchnorm": method.batchnorm}
    if method.validation_function == "random_bitwidths":
        spread = mp.random_bitwidths(model, loader, method.bitwidth_options, config.num_bitwidths, generator,
                                     recalibration)
        results["random_bitwidths"] = {**spread.summary(),
                                       "configurations": [dataclasses.asdict(e) for e in spread.evaluations]}
    table = mp.uniform_table(model, loader, method.bitwidth_options, recalibration)
    results["uniform"] = {str(k): {"accuracy": e.accuracy, "loss": e.loss} for k, e in table.items()}
    return results


def export_configuration(model: nn.Module, source, path: Path) -> dict[str, Any]:
    """The model's current configuration through the integer path, written to ``path`` and checked: exact vs
    integer and onnxruntime vs integer on calibration inputs; the deployed and switchable accuracies."""
    batches = source.calibration_samples(512)
    x = torch.cat(batches)[:VERIFY_INPUTS]
    flow = deploy_configuration(model, x, batches)
    exported = export_integer_onnx(flow.integer, x[:1], path)
    onnx = verify_onnxruntime(flow.integer, exported, x)
    exact = compare_exact_and_integer(flow.exact, flow.integer, x)
    fake = compare_fake_and_exact(flow.fake, flow.exact, x)
    return {"onnx": str(path), "configuration": mp.bitwidth_config(model),
            "onnx_mismatches": sum(c.mismatches for c in onnx), "onnx_values": sum(c.elements for c in onnx),
            "exact_vs_integer_mismatches": sum(c.mismatches for c in exact),
            "fake_vs_exact_mismatches": sum(c.mismatches for c in fake),
            "accuracy": evaluate(flow.exact, source.test)[0], "switchable_accuracy": evaluate(model, source.test)[0]}


def summary(results: dict[str, Any]) -> str:
    lines = [f"{results['method']}: {results['training_method']}, options {results['bitwidth_options']}, "
             f"BatchNorm {results['batchnorm']}"]
    if "random_bitwidths" in results:
        r = results["random_bitwidths"]
        lines.append(f"random configurations ({len(r['configurations'])}): accuracy mean {r['accuracy_mean']:.2f} %, "
                     f"min {r['accuracy_min']:.2f}, max {r['accuracy_max']:.2f}, std {r['accuracy_std']:.2f}; "
                     f"loss mean {r['loss_mean']:.4f}")
    lines.append("uniform bit-width | accuracy (%) | loss")
    lines += [f"{k:>17} | {v['accuracy']:12.2f} | {v['loss']:.4f}" for k, v in results["uniform"].items()]
    return "\n".join(lines)


def accuracy_plot(results: dict[str, Any]) -> bytes:
    """PNG: accuracy of each random configuration (sorted) and of each uniform bit-width."""
    figure, axes = subplots(1, 2, figsize=(9, 3.5))
    uniform = results["uniform"]
    axes[1].bar(list(uniform), [v["accuracy"] for v in uniform.values()])
    axes[1].set_xlabel("uniform bit-width")
    axes[1].set_ylabel("accuracy (%)")
    if "random_bitwidths" in results:
        accuracies = sorted(c["accuracy"] for c in results["random_bitwidths"]["configurations"])
        axes[0].plot(range(1, len(accuracies) + 1), accuracies, "o-")
    axes[0].set_xlabel("random configuration (sorted)")
    axes[0].set_ylabel("accuracy (%)")
    return png(figure)


if __name__ == "__main__":
    sys.exit(main())
