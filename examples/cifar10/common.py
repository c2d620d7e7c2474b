"""What the CIFAR-10 example scripts share: models, data, evaluation, and the checkpoint of a stage."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from quantlib.backends.diana.diana_module import DianaModule, Stage
from quantlib.backends.diana.export import run_twin
from quantlib.backends.diana.recipe import RecipeConfig, restore, step
from quantlib.checkpoint import Checkpoint, save_checkpoint
from quantlib.data import DataSource, data_source
from quantlib.training import train_epochs

MODELS = {"resnet8": "quantlib.zoo:resnet8", "resnet20": "quantlib.zoo:resnet20",
          "mobilenet": "quantlib.zoo:mobilenet_diana", "digits_cnn": "quantlib.zoo:digits_cnn"}


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--data-path", type=Path, help="the extracted cifar-10-batches-py folder")
    group.add_argument("--dataset", choices=["digits"], help="the bundled digits instead of CIFAR-10")


def data_spec(args: argparse.Namespace, checkpoint: Checkpoint | None = None) -> str:
    """The data named on the command line, else the checkpoint's; CIFAR-10 needs a path."""
    if args.dataset:
        return "digits"
    if args.data_path:
        return f"cifar10:{args.data_path}"
    if checkpoint is not None and checkpoint.data:
        return checkpoint.data
    raise SystemExit("error: give --data-path PATH (a cifar-10-batches-py folder) or --dataset digits")


def load_data(spec: str, batch_size: int) -> DataSource:
    try:
        return data_source(spec, batch_size=batch_size)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc


def accuracy(model: torch.nn.Module, loader) -> float:
    """Top-1 accuracy in percent (eval mode, no gradients)."""
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    model.train(was_training)
    return 100.0 * correct / total


def twin_accuracy(out_dir: Path, loader) -> float:
    """Top-1 accuracy of onnxruntime running the exported twin."""
    correct = total = 0
    for x, y in loader:
        correct += int((torch.from_numpy(np.asarray(run_twin(out_dir, x))).argmax(1) == y).sum())
        total += len(y)
    return 100.0 * correct / total


def save_stage(out: Path, name: str, checkpoint: Checkpoint) -> Path:
    path = out / f"{name}_{checkpoint.stage}.pt"
    save_checkpoint(path, checkpoint)
    print(f"  checkpoint: {path}")
    return path


def run_recipe(checkpoint: Checkpoint, data: DataSource, config: RecipeConfig, retrain: bool, out: Path,
               name: str, dialect: str = "dory") -> dict[str, float]:
    """From the checkpoint's stage through the staged recipe to an exported DIANA network: after each stage
    retrain (``retrain`` and the config's epochs), measure test accuracy and write a checkpoint; returns the
    accuracy per stage, ending with onnxruntime on the exported twin."""
    history = dict(checkpoint.history)
    model = restore(checkpoint)
    if isinstance(model, DianaModule):
        dm = model
    else:
        history["float"] = accuracy(model, data.test)
        dm = DianaModule.from_fp_model(model, torch.zeros(1, *checkpoint.input_shape),
                                       descriptors=config.descriptors, analog=config.analog)
        cores = list(dm.cores.values())
        print(f"cores: {cores.count('digital')} digital, {cores.count('analog')} analog")
    calibration = data.calibration_batches(config.calibration_batches)
    while dm.stage < Stage.HW_MAPPED:
        stage = step(dm, calibration, progress=True)
        training = config.training(stage)
        if retrain and training.epochs:
            if stage is Stage.POW2 and config.noise_sigma and dm.choice.analog:
                dm.set_analog_noise(config.noise_sigma)
            train_epochs(dm, data.train, training.epochs, training.lr, progress=True)
            if stage is Stage.POW2 and dm.choice.analog:
                dm.set_analog_noise(0.0)
        history[stage.label] = accuracy(dm, data.test)
        print(f"{stage.label:>14s}: {history[stage.label]:.2f} %")
        save_stage(out, name, Checkpoint(checkpoint.arch, checkpoint.arch_kwargs, checkpoint.input_shape,
                                         stage.label, dm.state_dict(), checkpoint.data, dict(history)))
    step(dm, calibration)
    history["integer"] = accuracy(dm, data.test)
    export_dir = out / f"{name}_diana"
    result = dm.export(export_dir, name, dialect=dialect, verify_on=torch.cat(calibration)[:16])
    history["onnxruntime"] = twin_accuracy(export_dir, data.test)
    print(f"{'integer':>14s}: {history['integer']:.2f} %\n{'onnxruntime':>14s}: {history['onnxruntime']:.2f} %")
    print(f"exported to {result.out_dir}/ ({result.mismatches} mismatches between onnxruntime and the integer model)")
    return history
