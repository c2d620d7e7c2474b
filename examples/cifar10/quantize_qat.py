"""The staged recipe with retraining: FP -> 8-bit -> map_scales -> pow2 (retraining at each stage as the config
says) -> map_to_hw -> integer -> DIANA export. Resumable: pass the checkpoint of any stage.

    python examples/cifar10/quantize_qat.py --checkpoint checkpoints/resnet20_float.pt --config configs/resnet20.yaml
    python examples/cifar10/quantize_qat.py --checkpoint checkpoints/resnet20_scales_mapped.pt --config ...
    torchrun --nproc_per_node 2 examples/cifar10/quantize_qat.py --checkpoint checkpoints/digits_cnn_float.pt \
        --dataset digits --config examples/cifar10/configs/digits.yaml --threads 1

Writes a checkpoint after every stage (``<out>/<name>_<stage>.pt``) and the DIANA folder ``<out>/<name>_diana/``
(rank 0 only under torchrun, where every stage's retraining is data-parallel and starts from rank 0's calibration).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from common import add_data_arguments, data_spec, load_data, run

from quantlib.backends.diana.recipe import RecipeConfig
from quantlib.checkpoint import CheckpointError, load_checkpoint
from quantlib.distributed import process_group


def main(retrain: bool = True, doc: str = __doc__) -> None:
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint of train.py or of any stage")
    add_data_arguments(parser)
    parser.add_argument("--config", type=Path, help="recipe YAML: stages' epochs and lr, analog policy, descriptors")
    parser.add_argument("--analog", choices=["none", "auto"], help="overrides the config")
    parser.add_argument("--descriptors", type=Path, help="overrides the config")
    parser.add_argument("--dialect", choices=["dory", "htvm"], default="dory")
    parser.add_argument("--out", type=Path, default=Path("checkpoints"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    try:
        checkpoint = load_checkpoint(args.checkpoint)
        config = RecipeConfig.from_yaml(args.config) if args.config else RecipeConfig()
    except (CheckpointError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    overrides = {k: v for k, v in (("analog", args.analog), ("descriptors", args.descriptors)) if v is not None}
    config = RecipeConfig(**{**config.__dict__, **{k: str(v) if k == "descriptors" else v
                                                     for k, v in overrides.items()}})
    data = load_data(data_spec(args, checkpoint), config.batch_size)
    name = args.checkpoint.stem.removesuffix(f"_{checkpoint.stage}")
    with process_group("cpu"):  # under torchrun: one group for every stage's retraining
        run(checkpoint, data, config, retrain, args.out, name, args.dialect)


if __name__ == "__main__":
    main()
