"""The staged recipe as data and steps, shared by the examples, ``make demo`` and ``quantlib-export``: one step
moves a DianaModule to its next stage; the stages after calibration, map_scales and pow2 may be retrained; a
checkpoint of any stage is restored to a DianaModule at that stage."""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule, Stage
from quantlib.backends.diana.export import ExportResult, check_output_folder, twin_accuracy
from quantlib.calibration import model_inputs
from quantlib.checkpoint import FLOAT_STAGE, Checkpoint, float_model
from quantlib.distributed import broadcast_from_main, current
from quantlib.training import accuracy, train_epochs

logger = logging.getLogger(__name__)

STAGE_KEYS = {Stage[row.name.upper()]: row.retrain_key for row in DianaModule.STAGES.rows if row.retrain_key}
"""The stages the recipe may retrain after reaching them, and their config keys (from the stage table)."""


def step(dm: DianaModule, calibration: Iterable, *, progress: bool = False) -> Stage:
    """Move ``dm`` to its next stage (calibrating on ``calibration`` where a stage needs data); returns the stage."""
    return dm.advance(calibration, progress=progress)


@dataclass(frozen=True)
class StageTraining:
    epochs: int = 0
    lr: float = 1e-3


@dataclass(frozen=True)
class RecipeConfig:
    """A staged-retraining configuration (usually YAML): float training, then per retrained stage epochs and
    learning rate; the analog policy or descriptors; calibration batches; analog noise during the pow2 stage."""

    float_training: StageTraining = StageTraining(30, 1e-3)
    stages: dict[str, StageTraining] = field(default_factory=lambda: {k: StageTraining() for k in
                                                                      STAGE_KEYS.values()})
    analog: str = "none"
    descriptors: str | None = None
    calibration_batches: int = 8
    noise_sigma: float = 0.0
    batch_size: int = 128

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> RecipeConfig:
        """Read a config file; unknown keys and malformed values raise ValueError naming the file and the key."""
        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"Cannot read recipe config '{path}': {exc}") from exc
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Mapping, source: str = "recipe config") -> RecipeConfig:
        allowed = {"float_training", "stages", "analog", "descriptors", "calibration_batches", "noise_sigma",
                   "batch_size"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; allowed: {sorted(allowed)}.")
        stages = dict(data.get("stages") or {})
        bad = sorted(set(stages) - set(STAGE_KEYS.values()))
        if bad:
            raise ValueError(f"{source}: unknown stage(s) {bad} under 'stages'; allowed: {list(STAGE_KEYS.values())}.")
        values = {k: v for k, v in data.items() if k not in ("float_training", "stages")}
        return cls(float_training=_training(data.get("float_training", {}), f"{source}: float_training",
                                            cls.float_training),
                   stages={k: _training(stages.get(k, {}), f"{source}: stages.{k}", StageTraining())
                           for k in STAGE_KEYS.values()},
                   **values)

    def training(self, stage: Stage) -> StageTraining:
        return self.stages.get(STAGE_KEYS.get(stage, ""), StageTraining())


def _training(data: Mapping, where: str, default: StageTraining) -> StageTraining:
    unknown = sorted(set(data) - {"epochs", "lr"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; allowed: ['epochs', 'lr'].")
    epochs, lr = data.get("epochs", default.epochs), data.get("lr", default.lr)
    if not isinstance(epochs, int) or epochs < 0 or not isinstance(lr, (int, float)) or lr <= 0:
        raise ValueError(f"{where}: epochs must be an integer >= 0 and lr a number > 0, got {epochs!r}, {lr!r}.")
    return StageTraining(epochs, float(lr))


def restore(checkpoint: Checkpoint) -> nn.Module | DianaModule:
    """The model a checkpoint holds: the float model (in eval mode), or a DianaModule rebuilt to its stage with its
    saved cores."""
    if checkpoint.stage == FLOAT_STAGE:
        return float_model(checkpoint)
    model = checkpoint.build()
    try:
        cores = dict(checkpoint.state_dict["_extra_state"]["cores"])
        dm = DianaModule.from_fp_model(model, torch.zeros(1, *checkpoint.input_shape), descriptors=cores)
        dm.load_state_dict(checkpoint.state_dict)
        return dm
    except (RuntimeError, KeyError) as exc:
        raise checkpoint.does_not_fit(exc) from exc


@dataclass(frozen=True)
class RecipeResult:
    """Test accuracy (%) per stage reached, ending with the integer model and onnxruntime on the exported twin."""

    accuracy: dict[str, float]
    export: ExportResult | None  # None on the ranks but 0 under torchrun


def run_recipe(dm: DianaModule, train: Iterable, test: Iterable, config: RecipeConfig, export_dir: str | os.PathLike,
               name: str, *, retrain: bool = True, dialect: str = "dory",
               on_stage: Callable[[DianaModule, dict[str, float]], None] | None = None,
               progress: bool = True) -> RecipeResult:
    """From ``dm``'s stage through the recipe to an exported DIANA network: after each stage retrain (``retrain``
    and the config's epochs; analog noise during pow2 if configured), measure test accuracy and call ``on_stage``
    (to write a checkpoint, say); then integerise, export to ``export_dir`` (checked first: ``check_output_folder``)
    and measure onnxruntime on the twin. Under torchrun every rank runs it: each stage starts from rank 0's model
    (its calibration included), the retraining is data-parallel, and only rank 0 calls ``on_stage`` and exports (the
    other ranks return ``export=None``)."""
    group = current()
    check_output_folder(export_dir)  # refused now, not after the retraining
    history: dict[str, float] = {}
    calibration = [model_inputs(dm.gm, b)[0] for b in itertools.islice(iter(train), config.calibration_batches)]
    while dm.stage < Stage.HW_MAPPED:
        stage = step(dm, calibration, progress=progress and group.is_main)
        broadcast_from_main([t for t in dm.state_dict().values() if isinstance(t, torch.Tensor)], group)
        training = config.training(stage)
        if retrain and training.epochs:
            noisy = stage is Stage.POW2 and config.noise_sigma > 0 and bool(dm.choice.analog)
            if noisy:
                dm.set_analog_noise(config.noise_sigma)
            train_epochs(dm, train, training.epochs, training.lr, progress=progress and group.is_main)
            if noisy:
                dm.set_analog_noise(0.0)
        history[stage.label] = accuracy(dm, test)
        logger.info("%s: %.2f %%", stage.label, history[stage.label])
        if on_stage is not None and group.is_main:
            on_stage(dm, dict(history))
    step(dm, calibration)
    history["integer"] = accuracy(dm, test)
    if not group.is_main:
        return RecipeResult(history, None)
    result = dm.export(export_dir, name, dialect=dialect, verify_on=torch.cat(calibration)[:16])
    history["onnxruntime"] = twin_accuracy(result.out_dir, test)
    return RecipeResult(history, result)
