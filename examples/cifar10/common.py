"""What the CIFAR-10 example scripts share: models, data, evaluation, and the checkpoint of a stage."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.recipe import RecipeConfig, restore, run_recipe
from quantlib.checkpoint import Checkpoint, save_checkpoint
from quantlib.data import DataSource, data_source
from quantlib.distributed import is_main_process
from quantlib.training import accuracy

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
        return f"cifar10:{args.data_path.resolve()}"  # absolute: the checkpoint records it for later runs
    if checkpoint is not None and checkpoint.data:
        return checkpoint.data
    raise SystemExit("error: give --data-path PATH (a cifar-10-batches-py folder) or --dataset digits")


def load_data(spec: str, batch_size: int) -> DataSource:
    try:
        return data_source(spec, batch_size=batch_size)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from exc


def save_stage(out: Path, name: str, checkpoint: Checkpoint) -> Path:
    path = out / f"{name}_{checkpoint.stage}.pt"
    save_checkpoint(path, checkpoint)
    print(f"  checkpoint: {path}")
    return path


def run(checkpoint: Checkpoint, data: DataSource, config: RecipeConfig, retrain: bool, out: Path, name: str,
        dialect: str = "dory") -> dict[str, float]:
    """From the checkpoint's stage through the staged recipe to ``<out>/<name>_diana/``, writing a checkpoint after
    every stage and printing the test accuracy of each; returns the accuracy per stage."""
    main_process = is_main_process()  # under torchrun, the one that prints (run_recipe writes on it only)
    model = restore(checkpoint)
    history = dict(checkpoint.history)
    if isinstance(model, DianaModule):
        dm = model
    else:
        history["float"] = accuracy(model, data.test)
        dm = DianaModule.from_fp_model(model, torch.zeros(1, *checkpoint.input_shape),
                                       descriptors=config.descriptors, analog=config.analog)
        cores = list(dm.cores.values())
        if main_process:
            print(f"cores: {cores.count('digital')} digital, {cores.count('analog')} analog")

    def on_stage(dm: DianaModule, reached: dict[str, float]) -> None:
        stage, top1 = next(reversed(reached.items()))
        print(f"{stage:>14s}: {top1:.2f} %")
        save_stage(out, name, Checkpoint(checkpoint.arch, checkpoint.arch_kwargs, checkpoint.input_shape, stage,
                                         dm.state_dict(), checkpoint.data, {**history, **reached}))

    result = run_recipe(dm, data.train, data.test, config, out / f"{name}_diana", name, retrain=retrain,
                        dialect=dialect, on_stage=on_stage)
    if main_process:
        for stage in ("integer", "onnxruntime"):
            print(f"{stage:>14s}: {result.accuracy[stage]:.2f} %")
        print(f"exported to {result.export.out_dir}/ ({result.export.summary()})")
    return {**history, **result.accuracy}
