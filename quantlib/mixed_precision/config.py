"""The YAML of joint mixed-precision training, key for key as the design note has it, plus model, data and training
sections; every bad key or value is refused before training, naming the file, the key, the value and what is allowed.

```yaml
quantization:
  enable: true
  Conv: QuanConv
  dorefa:                                   # a method block; --quantization-method picks one
    bitwidth_options: [2, 4, 8]
    weight_quantization: dorefa             # dorefa | lsq
    activation_quantization: dorefa         # dorefa | pact | lsq
    training_method: joint_quantization     # | vanilla_single_precision_training | recursive_distillation
    validation_function: random_bitwidths   # | simple_validation
    switchable_clipping: false
    sat_weight_normalization: false
    batchnorm: switchable                   # | shared | recalibrate   (optional)
    recalibration_batches: 10               # with recalibrate         (optional)
  joint_quantization: {joint_quantization_batch_size: 2}
  random_bitwidths: {num_bitwidths: 3}
model: {name: digits_cnn}                   # a zoo name, or module:callable (with kwargs: {...})
data: {dataset: digits, batch_size: 64}     # digits | cifar10 | cifar100 | imagenet | pamap2 | npz (path: ...)
training: {epochs: 10, lr: 0.003}           # quantlib.training.TrainConfig's fields
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quantlib.config_checks import ConfigError, keys, mapping, positive_int, read_yaml, require
from quantlib.data.sources import DATASETS
from quantlib.mixed_precision.conversion import BATCHNORM_MODES
from quantlib.mixed_precision.layers import ACTIVATION_QUANTISERS, WEIGHT_QUANTISERS, check_options
from quantlib.mixed_precision.training_methods import TRAINING_METHODS
from quantlib.mixed_precision.validation import VALIDATION_FUNCTIONS
from quantlib.training import TrainConfig

QUANTISATION_KEYS = ("enable", "Conv", "joint_quantization", "random_bitwidths")
"""The keys of ``quantization`` that are not method blocks."""


@dataclass(frozen=True)
class MethodConfig:
    """One method block of ``quantization``."""

    bitwidth_options: tuple[int, ...]
    weight_quantization: str = "dorefa"
    activation_quantization: str = "dorefa"
    training_method: str = "joint_quantization"
    validation_function: str = "random_bitwidths"
    switchable_clipping: bool = False
    sat_weight_normalization: bool = False
    batchnorm: str = "switchable"
    recalibration_batches: int = 10


@dataclass(frozen=True)
class MixedPrecisionConfig:
    """A whole configuration file, checked."""

    path: Path
    method_name: str
    method: MethodConfig
    joint_quantization_batch_size: int
    num_bitwidths: int
    model: str
    model_kwargs: dict[str, Any]
    dataset: str
    data_path: str | None
    batch_size: int
    training: TrainConfig

    def data_spec(self) -> str:
        """The ``quantlib.data.sources.data_source`` spec of the data section."""
        return f"{self.dataset}:{self.data_path}" if DATASETS[self.dataset].path else self.dataset


def load_config(path: str | os.PathLike, quantization_method: str | None = None,
                overrides: Mapping[str, Any] | None = None) -> MixedPrecisionConfig:
    """Read and check ``path``; ``quantization_method`` names the method block (optional when there is one);
    ``overrides`` replaces ``training`` keys (the command line's ``--epochs``, say)."""
    path = Path(path)
    data = read_yaml(path)
    where = f"{path}"
    keys(data, {"quantization", "model", "data", "training"}, where, "")
    quantisation = mapping(data.get("quantization"), where, "quantization")
    require(quantisation.get("enable") is True, where, "quantization.enable", quantisation.get("enable"),
             "true (this command trains quantised models)")
    require(quantisation.get("Conv", "QuanConv") == "QuanConv", where, "quantization.Conv", quantisation.get("Conv"),
             "'QuanConv'")
    methods = {k: v for k, v in quantisation.items() if k not in QUANTISATION_KEYS}
    if quantization_method is None:
        require(len(methods) == 1, where, "quantization", sorted(methods),
                 "exactly one method block, or --quantization-method naming one")
        quantization_method = next(iter(methods))
    require(quantization_method in methods, where, "--quantization-method", quantization_method,
             f"one of the method blocks {sorted(methods)}")
    method = _method(mapping(methods[quantization_method], where, f"quantization.{quantization_method}"), where,
                     f"quantization.{quantization_method}")
    joint = mapping(quantisation.get("joint_quantization", {}), where, "quantization.joint_quantization")
    keys(joint, {"joint_quantization_batch_size"}, where, "quantization.joint_quantization.")
    passes = joint.get("joint_quantization_batch_size", 2)
    require(positive_int(passes), where, "quantization.joint_quantization.joint_quantization_batch_size", passes,
             "an integer >= 1")
    random = mapping(quantisation.get("random_bitwidths", {}), where, "quantization.random_bitwidths")
    keys(random, {"num_bitwidths"}, where, "quantization.random_bitwidths.")
    num = random.get("num_bitwidths", 3)
    require(positive_int(num), where, "quantization.random_bitwidths.num_bitwidths", num, "an integer >= 1")
    model = mapping(data.get("model", {"name": "digits_cnn"}), where, "model")
    keys(model, {"name", "kwargs"}, where, "model.")
    name = model.get("name")
    require(isinstance(name, str) and name, where, "model.name", name, "a zoo name or 'module:callable'")
    kwargs = mapping(model.get("kwargs", {}), where, "model.kwargs")
    data_section = mapping(data.get("data", {"dataset": "digits"}), where, "data")
    keys(data_section, {"dataset", "path", "batch_size"}, where, "data.")
    dataset = data_section.get("dataset", "digits")
    require(dataset in DATASETS, where, "data.dataset", dataset, f"one of the data sets {list(DATASETS)}")
    data_path = data_section.get("path")
    require(not DATASETS[dataset].path or isinstance(data_path, str), where, "data.path", data_path,
             f"{DATASETS[dataset].path} (dataset {dataset} is read from a path)")
    batch_size = data_section.get("batch_size", 64)
    require(positive_int(batch_size), where, "data.batch_size", batch_size, "an integer >= 1")
    training_section = {**mapping(data.get("training", {}), where, "training"), **dict(overrides or {})}
    try:
        training = TrainConfig.from_mapping(training_section, f"{where}: training")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return MixedPrecisionConfig(path, quantization_method, method, passes, num, name, dict(kwargs), dataset,
                                data_path, batch_size, training)


def _method(block: Mapping[str, Any], where: str, key: str) -> MethodConfig:
    allowed = {"bitwidth_options", "weight_quantization", "activation_quantization", "training_method",
               "validation_function", "switchable_clipping", "sat_weight_normalization", "batchnorm",
               "recalibration_batches"}
    keys(block, allowed, where, f"{key}.")
    require("bitwidth_options" in block, where, f"{key}.bitwidth_options", None, "a list of bit-widths (1..16, 32)")
    options = block["bitwidth_options"]
    try:
        options = check_options(options if isinstance(options, list) else [options], f"{where}: {key}")
    except ValueError as error:
        raise ConfigError(str(error)) from error
    choices = {"weight_quantization": WEIGHT_QUANTISERS, "activation_quantization": ACTIVATION_QUANTISERS,
               "training_method": TRAINING_METHODS, "validation_function": VALIDATION_FUNCTIONS,
               "batchnorm": BATCHNORM_MODES}
    for name, allowed_values in choices.items():
        if name in block:
            require(block[name] in allowed_values, where, f"{key}.{name}", block[name],
                     f"one of {list(allowed_values)}")
    for name in ("switchable_clipping", "sat_weight_normalization"):
        if name in block:
            require(isinstance(block[name], bool), where, f"{key}.{name}", block[name], "true or false")
    if "recalibration_batches" in block:
        require(positive_int(block["recalibration_batches"]), where, f"{key}.recalibration_batches",
                 block["recalibration_batches"], "an integer >= 1")
    method = MethodConfig(**{**block, "bitwidth_options": options})
    if method.training_method == "vanilla_single_precision_training":
        require(len(options) == 1, where, f"{key}.bitwidth_options", list(options),
                 "one bit-width for vanilla_single_precision_training")
    return method
