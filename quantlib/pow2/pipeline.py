"""``run_pipeline``: a configuration in, the power-of-two model, its report and its AIMET encodings out. The float model
(its weights loaded, or trained first) is measured, made fake-quantised with every quantiser off, and taken through
``POW2_STAGES``; the accuracy is measured on the evaluation batches after each step, and the final model goes through
the integer path."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.utils.data import DataLoader

from quantlib.atomic_files import write_atomically
from quantlib.backends.onnx.integer_export import IntegerOnnx, integer_onnx
from quantlib.backends.onnx.verify import verify_onnxruntime
from quantlib.backends.onnx.writer import save_atomically
from quantlib.config_checks import ConfigError
from quantlib.data.sources import DataSource, data_source
from quantlib.data.validation_split import hold_out
from quantlib.editors.fake2true import integerise, to_exact
from quantlib.fake_quantisation import quantize
from quantlib.pow2.aimet import aimet_encodings
from quantlib.pow2.config import Pow2Config, load_config
from quantlib.pow2.report import build_report
from quantlib.pow2.stages import Pow2Model
from quantlib.pow2.tensors import set_activation_bits
from quantlib.training import TrainConfig, accuracy, criterion_loss, fit
from quantlib.true_quantisation import IntegerFlow
from quantlib.verification import compare_fake_and_exact
from quantlib.zoo import ARCHITECTURES


@dataclass(frozen=True)
class Pow2Run:
    """A finished run: the checked config, the float model, the staged model, the evaluation batches the accuracies
    were measured on, the report, and (after ``final_ptq``) the integer path and its integer ONNX."""

    config: Pow2Config
    float_model: nn.Module
    model: Pow2Model
    evaluation: list
    report: dict[str, Any]
    flow: IntegerFlow | None
    onnx: IntegerOnnx | None


def quantisation_spec(config: Pow2Config) -> dict[str, Any]:
    """The quantiser spec of ``config``: weights rounded to nearest; activations floored with power-of-two scales
    (a shift floors), rounded otherwise; every range from the calibration data's minimum and maximum."""
    shifts = config.input.power_of_2 and config.output.power_of_2
    act = {"qop": "floor" if shifts else "round", "init": "minmax"}
    signed = {"signed": True} if config.output.symmetric else {}
    return {"weights": {"qrange": {"bitwidth": config.weight.bitwidth,
                                   **({"signed": True} if config.weight.symmetric else {})},
                        "qop": "round", "init": "minmax",
                        "granularity": "per-outchannel_weights" if config.per_channel else "per-array"},
            "relu": {"qrange": {"bitwidth": config.output.bitwidth, "signed": False}, **act},
            "activations": {"qrange": {"bitwidth": config.output.bitwidth, **signed}, **act}}


def float_model(config: Pow2Config, train: Iterable) -> nn.Module:
    """The configured model (initialised from ``training.seed``) with its weights loaded, or trained
    ``model.pretrain.epochs`` epochs on ``train`` (Adam, cosine)."""
    if config.training.seed is not None:
        torch.manual_seed(config.training.seed)
    model = ARCHITECTURES[config.model](num_classes=config.num_classes, **config.model_kwargs)
    if config.weights is not None:
        state = torch.load(config.weights, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state.get("model", state) if isinstance(state, Mapping) else state)
        except (RuntimeError, AttributeError) as error:
            raise ValueError(f"{config.source}: model.weights '{config.weights}' does not hold the weights of "
                             f"'{config.model}': {str(error).strip()[:300]}") from error
    elif config.pretrain_epochs:
        t = config.training
        fit(model, train, TrainConfig(epochs=config.pretrain_epochs, lr=config.pretrain_lr, device=t.device,
                                           seed=t.seed, progress=t.progress), loss=criterion_loss(config.criterion))
    return model.to("cpu").eval()


def fake_quantised(model: nn.Module, config: Pow2Config, example_input: torch.Tensor) -> fx.GraphModule:
    """The fake-quantised copy of ``model`` with the config's bits per tensor type, nothing calibrated (float)."""
    gm = quantize(model, example_input, quantisation_spec(config), quantise_outputs=True)
    set_activation_bits(gm, config.input, config.output)
    return gm


def training_split(config: Pow2Config, data: DataSource) -> tuple[Iterable, DataLoader | None]:
    """The batches to train on and, with ``training.validation_split``, the held-out ones the best QAT epoch is picked
    on (None: it is picked on the evaluation batches)."""
    if not config.validation_split:
        return data.train, None
    if not isinstance(data.train, DataLoader):
        raise ConfigError(f"{config.source}: training.validation_split = {config.validation_split} holds out part of "
                          f"the training set, but data set '{config.dataset}' gives a {type(data.train).__name__}, "
                          f"not a DataLoader; set training.validation_split to 0 to pick the best QAT epoch on the "
                          f"evaluation batches.")
    return hold_out(data.train, config.validation_split, config.training.seed or 0)


def run(config: str | os.PathLike | Mapping[str, Any] | Pow2Config, *, final_ptq: bool = True,
        overrides: Mapping[str, Any] | None = None) -> Pow2Run:
    """Run the pipeline as ``config`` (a YAML path, its mapping, or a Pow2Config) says; ``final_ptq=False`` stops
    after the QAT, activations float. Every configuration error is raised before any data is read."""
    config = load_config(config, overrides)
    data = data_source(config.data_spec(), batch_size=config.batch_size)
    evaluation = list(itertools.islice(data.test, config.max_eval_batches))
    train, validation = training_split(config, data)
    calibration = list(itertools.islice(data.calibration_data, config.calibration_batches))
    example = calibration[0][0] if isinstance(calibration[0], (tuple, list)) else calibration[0]
    reference = float_model(config, train)
    accuracies = {"initial_accuracy": accuracy(reference, evaluation)}
    model = Pow2Model(fake_quantised(reference, config, example[:1]), config, example[:1])
    model.ptq(calibration)
    accuracies["ptq_accuracy"] = accuracy(model, evaluation)
    model.qat(train, validation if validation is not None else evaluation, criterion_loss(config.criterion))
    accuracies["qat_best_accuracy"] = accuracy(model, evaluation)
    flow = exported = None
    if final_ptq:
        model.final_ptq(calibration)
        exact = to_exact(model.gm, example[:1])
        flow = IntegerFlow(model.gm, exact, integerise(exact))
        exported = integer_onnx(flow.integer, example[:1], f"{config.model}_integer")
    accuracies["final_accuracy"] = accuracy(model, evaluation) if final_ptq else accuracies["qat_best_accuracy"]
    report = build_report(model.gm, config, accuracies, trained=config.training.epochs > 0, final_ptq=final_ptq)
    return Pow2Run(config, reference, model, evaluation, report, flow, exported)


def verify_deployment(result: Pow2Run, x: torch.Tensor) -> dict[str, int]:
    """On inputs ``x``: the elements where the fake-quantised model's quantised values differ from the integer
    path's, those where onnxruntime on the exported integer ONNX differs from the integer model, and how many
    onnxruntime values were compared."""
    if result.flow is None:
        raise ValueError("This run stopped after the QAT (final_ptq=False): its activations are float, so it has no "
                         "integer path to verify; run it with the final PTQ.")
    onnx = verify_onnxruntime(result.flow.integer, result.onnx, x)
    return {"fake_vs_integer_mismatches": sum(c.mismatches for c in compare_fake_and_exact(result.flow.fake,
                                                                                           result.flow.exact, x)),
            "onnx_mismatches": sum(c.mismatches for c in onnx), "onnx_values": sum(c.elements for c in onnx)}


def write_outputs(result: Pow2Run, out_dir: str | os.PathLike, name: str | None = None) -> dict[str, Path]:
    """Write ``<name>_report.json``, ``<name>_torch.encodings`` and (after ``final_ptq``) the integer ONNX
    ``<name>_integer.onnx`` into ``out_dir`` (each to a temporary name, then renamed); ``name`` defaults to the
    model's. Returns the paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or result.config.model
    paths = {"report": out / f"{name}_report.json", "encodings": out / f"{name}_torch.encodings"}
    write_atomically(paths["report"], (json.dumps(result.report, indent=2) + "\n").encode())
    encodings = aimet_encodings(result.model.gm, result.config)
    write_atomically(paths["encodings"], (json.dumps(encodings, indent=2) + "\n").encode())
    if result.onnx is not None:
        paths["onnx"] = out / f"{name}_integer.onnx"
        save_atomically(result.onnx.model, paths["onnx"])
    return paths


def run_pipeline(config: str | os.PathLike | Mapping[str, Any] | Pow2Config, *, out_dir: str | os.PathLike | None
                 = None, final_ptq: bool = True, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``run`` the pipeline and, with ``out_dir``, ``write_outputs``; returns the report."""
    result = run(config, final_ptq=final_ptq, overrides=overrides)
    if out_dir is not None:
        write_outputs(result, out_dir)
    return result.report

