"""The YAML of the power-of-two pipeline; every bad key or value is refused before any data is read, naming the file,
the key, the value and what is allowed. Models, data sets, criteria, optimisers and schedulers are names of
registries (``quantlib.zoo.ARCHITECTURES``, ``quantlib.data.sources.DATASETS``, ``quantlib.training.CRITERIA``,
``OPTIMISERS``, ``SCHEDULERS``): register your own and name it here.

```yaml
quantization:
  weight: {bitwidth: 8, symmetric: true, power_of_2: true}   # 2..8 bits
  input:  {bitwidth: 8, symmetric: true, power_of_2: true}   # 2..8: the network input, inputs no layer produces
  output: {bitwidth: 8, symmetric: true, power_of_2: true}   # 2..8: every layer's output (ReLU outputs unsigned)
  bias:   {bitwidth: 32, symmetric: true, power_of_2: true}  # 8..32, symmetric
  scale_rounding: round       # round: 2^round(log2 s); ceil: 2^ceil(log2 s), which keeps the calibrated range
  per_channel: false          # one weight scale per output channel
model: {name: digits_cnn, num_classes: 10}   # weights: a state dict (.pt); else pretrain: {epochs, learning_rate}
data: {dataset: digits}                      # path: for the data sets read from a folder
training:                                    # the weight-only QAT
  epochs: 5
  learning_rate: 1.0e-4
  weight_decay: 0.01
  batch_size: 64
  criterion: CrossEntropyLoss
  optimizer: {type: AdamW}                   # AdamW | Adam | SGD (momentum: ...) | registered
  scheduler: {type: StepLR, step_size: 3, gamma: 0.5}   # StepLR | CosineAnnealingLR | none | registered
  device: auto
  seed: 0
  validation_split: 0.1                      # held out of the training set to pick the best QAT epoch (0: test)
ptq: {calibration_batches: 10, max_eval_batches: null}   # null: every evaluation batch
```
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from quantlib.config_checks import ConfigError, is_int, keys, mapping, positive_int, positive_number, read_yaml, require
from quantlib.data.sources import DATASETS
from quantlib.training import CRITERIA, TrainConfig
from quantlib.zoo import ARCHITECTURES

TENSOR_TYPES = ("weight", "input", "output", "bias")
BITS = {"weight": (2, 8), "input": (2, 8), "output": (2, 8), "bias": (8, 32)}
"""The bit-widths each tensor type may have (inclusive)."""
SCALE_ROUNDINGS = ("round", "ceil")


@dataclass(frozen=True)
class TensorQuantisation:
    """How one type of tensor is quantised: ``bitwidth`` bits; ``symmetric``: a grid symmetric about zero (else a
    learned zero point); ``power_of_2``: its scale is 2^-k (else any float)."""

    bitwidth: int
    symmetric: bool = True
    power_of_2: bool = True

    def as_dict(self) -> dict[str, Any]:
        """The report's and the YAML's form: bitwidth, symmetric, power_of_2."""
        return {"bitwidth": self.bitwidth, "symmetric": self.symmetric, "power_of_2": self.power_of_2}


@dataclass(frozen=True)
class Pow2Config:
    """A whole configuration, checked; ``source`` names it in messages (its file, or 'config')."""

    source: str
    weight: TensorQuantisation
    input: TensorQuantisation
    output: TensorQuantisation
    bias: TensorQuantisation
    scale_rounding: str
    per_channel: bool
    model: str
    num_classes: int
    model_kwargs: dict[str, Any]
    weights: Path | None
    pretrain_epochs: int
    pretrain_lr: float
    dataset: str
    data_path: str | None
    batch_size: int
    criterion: str
    training: TrainConfig
    validation_split: float
    calibration_batches: int
    max_eval_batches: int | None

    def tensor(self, kind: str) -> TensorQuantisation:
        """The quantisation of tensor type ``kind`` ('weight', 'input', 'output' or 'bias')."""
        return getattr(self, kind)

    def data_spec(self) -> str:
        """The ``quantlib.data.sources.data_source`` spec of the data section."""
        return f"{self.dataset}:{self.data_path}" if DATASETS[self.dataset].path else self.dataset


_TRAINING_KEYS = {"epochs", "learning_rate", "weight_decay", "batch_size", "criterion", "optimizer", "scheduler",
                  "device", "seed", "progress", "momentum", "validation_split"}
_TRAIN_CONFIG_NAMES = {"learning_rate": "lr", "epochs": "epochs", "weight_decay": "weight_decay", "device": "device",
                       "seed": "seed", "progress": "progress", "momentum": "momentum"}
_YAML_KEYS = {**{field: f"training.{key}" for key, field in _TRAIN_CONFIG_NAMES.items()},
              "optimiser": "training.optimizer.type", "scheduler": "training.scheduler.type",
              "step_size": "training.scheduler.step_size", "gamma": "training.scheduler.gamma"}
"""TrainConfig's fields as the YAML names them, for its messages."""


def load_config(config: str | os.PathLike | Mapping[str, Any] | Pow2Config,
                overrides: Mapping[str, Any] | None = None) -> Pow2Config:
    """A checked configuration from a YAML file, its mapping, or a config; ``overrides`` (the command line's
    ``epochs``, ``data_path``, ``max_eval_batches``, ``device``, ``seed``, ``progress``) win over the file's values.
    ConfigError names the file, the key, the value and what is allowed."""
    if isinstance(config, Pow2Config):
        if overrides:
            raise ValueError("Overrides apply to a configuration file or mapping, not to a loaded Pow2Config: use "
                             "dataclasses.replace on it.")
        return config
    source = "config" if isinstance(config, Mapping) else str(config)
    data = dict(config) if isinstance(config, Mapping) else read_yaml(config)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {"epochs", "data_path", "max_eval_batches", "device", "seed", "progress"})
    require(not unknown, source, "overrides", unknown, "epochs, data_path, max_eval_batches, device, seed, progress")
    keys(data, {"quantization", "model", "data", "training", "ptq"}, source, "")
    q = mapping(data.get("quantization", {}), source, "quantization")
    keys(q, {*TENSOR_TYPES, "scale_rounding", "per_channel"}, source, "quantization.")
    tensors = {kind: _tensor(q.get(kind), kind, source) for kind in TENSOR_TYPES}
    rounding = q.get("scale_rounding", "round")
    require(rounding in SCALE_ROUNDINGS, source, "quantization.scale_rounding", rounding,
            f"one of {list(SCALE_ROUNDINGS)} (2^round(log2 s), or 2^ceil(log2 s), which keeps the range)")
    per_channel = q.get("per_channel", False)
    require(isinstance(per_channel, bool), source, "quantization.per_channel", per_channel, "true or false")

    model = mapping(data.get("model", {}), source, "model")
    keys(model, {"name", "num_classes", "kwargs", "weights", "pretrain"}, source, "model.")
    name = model.get("name", "digits_cnn")
    require(name in ARCHITECTURES, source, "model.name", name,
            f"a registered model (quantlib.zoo.ARCHITECTURES): {sorted(ARCHITECTURES)}")
    num_classes = model.get("num_classes", 10)
    require(positive_int(num_classes), source, "model.num_classes", num_classes, "an integer >= 1")
    kwargs = mapping(model.get("kwargs", {}), source, "model.kwargs")
    weights = model.get("weights")
    require(weights is None or isinstance(weights, str), source, "model.weights", weights,
            "the path of the float model's state dict, or null (then model.pretrain trains it)")
    if weights is not None:
        require(Path(weights).is_file(), source, "model.weights", weights, "an existing file")
    pretrain = mapping(model.get("pretrain", {}), source, "model.pretrain")
    keys(pretrain, {"epochs", "learning_rate"}, source, "model.pretrain.")
    pretrain_epochs = pretrain.get("epochs", 20)
    require(is_int(pretrain_epochs) and pretrain_epochs >= 0,
            source, "model.pretrain.epochs", pretrain_epochs, "an integer >= 0")
    pretrain_lr = pretrain.get("learning_rate", 3e-3)
    require(positive_number(pretrain_lr), source, "model.pretrain.learning_rate", pretrain_lr, "a number > 0")

    data_section = mapping(data.get("data", {}), source, "data")
    keys(data_section, {"dataset", "path"}, source, "data.")
    dataset = data_section.get("dataset", "digits")
    require(dataset in DATASETS, source, "data.dataset", dataset,
            f"a registered data set (quantlib.data.sources.DATASETS): {list(DATASETS)}")
    data_path = overrides.get("data_path", data_section.get("path"))
    if DATASETS[dataset].path:
        require(isinstance(data_path, str), source, "data.path", data_path,
                f"{DATASETS[dataset].path} (data set {dataset} is read from a path; or give --data-path)")
    else:
        require(data_path is None, source, "data.path", data_path, f"nothing: data set {dataset} is bundled")

    training = mapping(data.get("training", {}), source, "training")
    keys(training, _TRAINING_KEYS, source, "training.")
    batch_size = training.get("batch_size", 64)
    require(positive_int(batch_size), source, "training.batch_size", batch_size, "an integer >= 1")
    criterion = training.get("criterion", "CrossEntropyLoss")
    require(criterion in CRITERIA, source, "training.criterion", criterion,
            f"a registered criterion (quantlib.training.CRITERIA): {list(CRITERIA)}")
    validation_split = training.get("validation_split", 0.1)
    require((validation_split == 0 or positive_number(validation_split)) and validation_split < 1, source,
            "training.validation_split", validation_split,
            "a fraction from 0 (pick the best QAT epoch on the evaluation batches) up to, not including, 1")
    optimiser = mapping(training.get("optimizer", {}), source, "training.optimizer")
    keys(optimiser, {"type"}, source, "training.optimizer.")
    scheduler = mapping(training.get("scheduler", {}), source, "training.scheduler")
    keys(scheduler, {"type", "step_size", "gamma"}, source, "training.scheduler.")
    fields = {_TRAIN_CONFIG_NAMES[k]: v for k, v in training.items() if k in _TRAIN_CONFIG_NAMES}
    fields.setdefault("epochs", 5)
    fields.setdefault("lr", 1e-4)
    fields.setdefault("weight_decay", 0.01)
    fields.update(optimiser=optimiser.get("type", "AdamW"), scheduler=scheduler.get("type", "StepLR"),
                  **{k: v for k, v in scheduler.items() if k != "type"})
    if isinstance(fields["scheduler"], str) and fields["scheduler"].lower() in ("step", "steplr"):
        fields.setdefault("step_size", 3)
        fields.setdefault("gamma", 0.5)
    fields.update({k: overrides[k] for k in ("epochs", "device", "seed", "progress") if k in overrides})
    try:
        train_config = TrainConfig.from_mapping(fields, source, _YAML_KEYS)
    except ValueError as error:
        raise ConfigError(str(error)) from error

    ptq = mapping(data.get("ptq", {}), source, "ptq")
    keys(ptq, {"calibration_batches", "max_eval_batches"}, source, "ptq.")
    calibration_batches = ptq.get("calibration_batches", 10)
    require(positive_int(calibration_batches), source, "ptq.calibration_batches", calibration_batches,
            "an integer >= 1")
    max_eval = overrides.get("max_eval_batches", ptq.get("max_eval_batches"))
    require(max_eval is None or positive_int(max_eval), source, "ptq.max_eval_batches", max_eval,
            "an integer >= 1, or null for every evaluation batch")
    return Pow2Config(source, **tensors, scale_rounding=rounding, per_channel=per_channel, model=name,
                      num_classes=num_classes, model_kwargs=dict(kwargs),
                      weights=Path(weights) if weights is not None else None, pretrain_epochs=pretrain_epochs,
                      pretrain_lr=float(pretrain_lr), dataset=dataset, data_path=data_path, batch_size=batch_size,
                      criterion=criterion, training=train_config, validation_split=float(validation_split),
                      calibration_batches=calibration_batches,
                      max_eval_batches=max_eval)


def _tensor(block: object, kind: str, source: str) -> TensorQuantisation:
    """The checked ``quantization.<kind>`` block (absent: 8 bits, 32 for biases; symmetric, power of two)."""
    default = TensorQuantisation(32 if kind == "bias" else 8)
    if block is None:
        return default
    block = mapping(block, source, f"quantization.{kind}")
    keys(block, {"bitwidth", "symmetric", "power_of_2"}, source, f"quantization.{kind}.")
    low, high = BITS[kind]
    bits = block.get("bitwidth", default.bitwidth)
    require(is_int(bits) and low <= bits <= high, source,
            f"quantization.{kind}.bitwidth", bits, f"an integer from {low} to {high}")
    for flag in ("symmetric", "power_of_2"):
        value = block.get(flag, True)
        require(isinstance(value, bool), source, f"quantization.{kind}.{flag}", value, "true or false")
    if kind == "bias":
        require(block.get("symmetric", True), source, "quantization.bias.symmetric", block.get("symmetric"),
                "true (a bias is a signed integer on its accumulator's grid, which has no zero point)")
    return replace(default, bitwidth=bits, symmetric=block.get("symmetric", True),
                   power_of_2=block.get("power_of_2", True))

