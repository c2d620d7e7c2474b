"""Float training of a CIFAR-10 model (or of one for the bundled digits), the first step of the staged recipe.

    python examples/cifar10/train.py --model resnet20 --data-path data/cifar-10-batches-py \
        --config examples/cifar10/configs/resnet20.yaml
    python examples/cifar10/train.py --model resnet8 --dataset digits --epochs 10
    torchrun --nproc_per_node 2 examples/cifar10/train.py --model digits_cnn --dataset digits --epochs 2

Writes ``<out>/<model>_float.pt``, a checkpoint that quantize_ptq.py, quantize_qat.py and quantlib-export read (rank 0
only under torchrun, where every process takes batch_size samples a step: the global batch is nproc x batch_size).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from common import MODELS, add_data_arguments, data_spec, load_data, save_stage

from quantlib.backends.diana.recipe import RecipeConfig
from quantlib.checkpoint import Checkpoint, build_architecture
from quantlib.distributed import is_main_process
from quantlib.training import DEVICES, TrainConfig, accuracy, fit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS), default="resnet20")
    add_data_arguments(parser)
    parser.add_argument("--config", type=Path, help="recipe YAML (float_training: epochs, lr; batch_size)")
    parser.add_argument("--epochs", type=int, help="overrides the config")
    parser.add_argument("--lr", type=float, help="overrides the config")
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when available")
    parser.add_argument("--checkpoint-dir", type=Path, help="write a training checkpoint (last.pt) there every epoch")
    parser.add_argument("--resume", action="store_true", help="continue from the last.pt in --checkpoint-dir")
    parser.add_argument("--threads", type=int, help="torch threads per process (default: torch's; torchrun sets "
                                                    "OMP_NUM_THREADS=1 per process)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.resume and args.checkpoint_dir is None:
        parser.error("--resume needs --checkpoint-dir, the folder holding last.pt")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    config = RecipeConfig.from_yaml(args.config) if args.config else RecipeConfig()
    spec = data_spec(args)
    data = load_data(spec, config.batch_size)
    kwargs = {"num_classes": data.num_classes, "in_channels": data.input_shape[0]}
    if args.model == "digits_cnn":
        kwargs.pop("in_channels")
    model = build_architecture(MODELS[args.model], kwargs)
    epochs = args.epochs if args.epochs is not None else config.float_training.epochs
    lr = args.lr if args.lr is not None else config.float_training.lr
    main_process = is_main_process()
    if main_process:
        print(f"training {args.model} on {spec} for {epochs} epochs (lr {lr})")
    fit(model, data.train, TrainConfig(epochs=epochs, lr=lr, device=args.device, checkpoint_dir=args.checkpoint_dir,
                                       resume=args.resume, seed=args.seed))
    top1 = accuracy(model, data.test)
    if main_process:
        print(f"float accuracy: {top1:.2f} %")
        save_stage(args.out, args.model, Checkpoint(MODELS[args.model], kwargs, list(data.input_shape), "float",
                                                    model.cpu().state_dict(), spec, {"float": top1}))


if __name__ == "__main__":
    main()
