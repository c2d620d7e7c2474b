"""The one training loop of every recipe: ``fit`` trains a model as a ``TrainConfig`` says (optimiser, learning-rate
schedule, device, mixed precision, a checkpoint every epoch, resume), in one process or, under torchrun, in many
(DistributedDataParallel, see quantlib.distributed); ``evaluate`` and ``accuracy`` measure a model; ``train_epochs``
is the short form the demo, benchmarks and tests use.

Batches are ``(inputs, targets)`` with class-index targets. Under torchrun every rank takes the loader's
``batch_size`` per step, so the global batch is ``world_size x batch_size``; only rank 0 logs (logger
``quantlib.training``), shows the progress bar and writes checkpoints."""

from __future__ import annotations

import io
import itertools
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, SequentialLR, StepLR
from tqdm import tqdm

from quantlib import distributed
from quantlib.atomic_files import write_atomically
from quantlib.distributed import ProcessGroup
from quantlib.registry import Registry

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda", "auto")
CHECKPOINT_NAME = "last.pt"
CHECKPOINT_FORMAT = "quantlib-training-checkpoint"
CHECKPOINT_VERSION = 1

HISTORY = ("train_loss", "train_accuracy", "eval_accuracy", "eval_loss", "lr", "seconds")
"""The per-epoch lists of a TrainResult (and of a checkpoint's ``history``)."""

Loss = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
"""``loss(model, inputs, targets) -> (loss, logits)``: the scalar to minimise and the model's logits."""


@dataclass(frozen=True)
class TrainConfig:
    """How ``fit`` trains; the batch size is the loader's. Invalid values raise ValueError naming the field."""

    epochs: int = 10
    """Passes over the training loader."""
    lr: float = 1e-3
    """Learning rate (a param group's own ``lr`` takes precedence)."""
    optimiser: str = "adam"
    """A name of ``OPTIMISERS``: 'adam', 'sgd', 'adamw' or one registered there."""
    momentum: float = 0.0
    """SGD momentum, in [0, 1) (optimiser 'sgd' only)."""
    weight_decay: float = 0.0
    """L2 penalty (adam, sgd) or decoupled decay (adamw); a param group's own ``weight_decay`` takes precedence."""
    nesterov: bool = False
    """Nesterov momentum (optimiser 'sgd' with momentum > 0 only)."""
    scheduler: str = "cosine"
    """Learning rate per epoch, a name of ``SCHEDULERS``: 'cosine' (from lr to 0 over the epochs after the warm-up),
    'step' (times ``gamma`` every ``step_size`` epochs), 'none' (constant) or one registered there."""
    step_size: int = 30
    """Epochs between two decays of the 'step' scheduler."""
    gamma: float = 0.1
    """Decay factor of the 'step' scheduler, in (0, 1]."""
    warmup_epochs: int = 0
    """Epochs of linear warm-up from lr / (warmup_epochs + 1) up to lr before the scheduler (0: none)."""
    device: str = "auto"
    """'cpu', 'cuda' (under torchrun the GPU numbered LOCAL_RANK) or 'auto' (cuda when available)."""
    amp: bool | None = None
    """Mixed precision: float16 autocast with a GradScaler on CUDA, bfloat16 autocast on the CPU. None: on CUDA,
    off on the CPU."""
    checkpoint_dir: Path | None = None
    """Folder of the checkpoint ``last.pt`` written after every epoch (visible to every rank); None: no checkpoint."""
    resume: bool = False
    """Continue from ``checkpoint_dir/last.pt`` (a fresh start if it does not exist yet); needs checkpoint_dir."""
    log_every: int = 0
    """Log the running loss and accuracy every this many steps (0: once per epoch only)."""
    progress: bool = True
    """A tqdm bar per epoch with the running loss and accuracy, shown only on a terminal and on rank 0."""
    seed: int | None = 0
    """Seeds torch, random and numpy when training starts (every rank alike) and the DistributedSampler's shuffle;
    None leaves the generators as they are (the shuffle then uses 0)."""

    def __post_init__(self) -> None:
        if self.checkpoint_dir is not None and isinstance(self.checkpoint_dir, (str, os.PathLike)):
            object.__setattr__(self, "checkpoint_dir", Path(self.checkpoint_dir))
        for name in _NAMED:  # registry names match regardless of case: keep the registry's spelling
            if isinstance(getattr(self, name), str):
                object.__setattr__(self, name, getattr(self, name).lower())
        problem = _problem(self.as_dict())
        if problem:
            raise ValueError(f"TrainConfig: {problem}")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "training config",
                     keys: Mapping[str, str] | None = None) -> TrainConfig:
        """A config from a mapping (a YAML section, a checkpoint's ``config``); unknown keys and invalid values raise
        ValueError naming ``source``, the key (as ``keys`` spells it, if the caller's file names it otherwise: e.g.
        ``{"lr": "training.learning_rate"}``), the value and what is allowed."""
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {unknown}; valid keys: {valid}.")
        problem = _problem({**TrainConfig().as_dict(), **data}, keys or {})
        if problem:
            raise ValueError(f"{source}: {problem}")
        return cls(**data)

    def as_dict(self) -> dict[str, Any]:
        """The fields as plain values (checkpoint_dir as a string), as ``from_mapping`` takes them."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if isinstance(values["checkpoint_dir"], Path):
            values["checkpoint_dir"] = str(values["checkpoint_dir"])
        return values


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "lr": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "optimiser": (lambda v: v in OPTIMISERS, "one of the optimisers"),
    "momentum": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "weight_decay": (lambda v: _is_number(v) and v >= 0, "a number >= 0"),
    "nesterov": (lambda v: isinstance(v, bool), "true or false"),
    "scheduler": (lambda v: v in SCHEDULERS, "one of the schedulers"),
    "step_size": (lambda v: _is_int(v) and v >= 1, "an integer >= 1"),
    "gamma": (lambda v: _is_number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "warmup_epochs": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "device": (lambda v: v in DEVICES, f"one of {list(DEVICES)}"),
    "amp": (lambda v: v is None or isinstance(v, bool), "true, false or null (null: on CUDA only)"),
    "checkpoint_dir": (lambda v: v is None or isinstance(v, (str, os.PathLike)), "a folder path or null"),
    "resume": (lambda v: isinstance(v, bool), "true or false"),
    "log_every": (lambda v: _is_int(v) and v >= 0, "an integer >= 0"),
    "progress": (lambda v: isinstance(v, bool), "true or false"),
    "seed": (lambda v: v is None or _is_int(v), "an integer or null"),
}


def _exponent_text(value: object) -> bool:
    """Whether ``value`` is a number in exponent notation left as a string, as YAML 1.1 leaves ``1e-3``."""
    try:
        return isinstance(value, str) and "e" in value.lower() and math.isfinite(float(value))
    except ValueError:
        return False


def _problem(values: Mapping[str, Any], keys: Mapping[str, str] | None = None) -> str | None:
    """What is wrong with a config's values, or None; ``keys`` renames fields in the message."""
    for key, (ok, allowed) in _RULES.items():
        value = values[key]
        if not ok(value):
            hint = " (YAML reads 1e-3, without a dot, as text: write 1.0e-3)" if _exponent_text(value) else ""
            known = (f" {list(_NAMED[key])} (register another in quantlib.training.{_NAMED[key].kind.upper()}S)"
                     if key in _NAMED else "")
            name = (keys or {}).get(key, key)
            return f"{name}={value!r} is not allowed: {name} must be {allowed}{known}{hint}."
    sgd = str(values["optimiser"]).lower() == "sgd"
    if values["momentum"] and not sgd:
        return (f"momentum={values['momentum']!r} applies to optimiser 'sgd' only, not "
                f"{values['optimiser']!r}: set optimiser to 'sgd' or momentum to 0.")
    if values["nesterov"] and (not sgd or not values["momentum"]):
        return (f"nesterov=True needs optimiser 'sgd' with momentum > 0, got optimiser={values['optimiser']!r} and "
                f"momentum={values['momentum']!r}.")
    if values["warmup_epochs"] and values["warmup_epochs"] >= values["epochs"]:
        return (f"warmup_epochs={values['warmup_epochs']!r} is not allowed with epochs={values['epochs']!r}: "
                f"warmup_epochs must be smaller than epochs (or 0).")
    if values["resume"] and values["checkpoint_dir"] is None:
        return f"resume=True needs checkpoint_dir, the folder holding {CHECKPOINT_NAME}."
    return None


@dataclass(frozen=True)
class TrainResult:
    """What ``fit`` did, one entry per epoch from the first (a resumed run includes the checkpoint's epochs)."""

    train_loss: list[float]
    """Mean training loss over the epoch's samples (all ranks)."""
    train_accuracy: list[float]
    """Top-1 accuracy (%) on the training batches, measured while training (all ranks)."""
    eval_accuracy: list[float]
    """Top-1 accuracy (%) on ``eval_loader`` after the epoch; empty without it."""
    eval_loss: list[float]
    """Mean cross-entropy on ``eval_loader`` after the epoch; empty without it."""
    lr: list[float]
    """The learning rate of the first param group during the epoch."""
    seconds: list[float]
    """Wall time of the epoch's training and evaluation."""
    epoch: int
    """The epochs completed (the final epoch's number, counting from 1)."""
    checkpoint: Path | None
    """The last checkpoint written (or resumed from); None without checkpoint_dir."""


def cross_entropy_loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean cross-entropy of ``model(inputs)`` against class indices ``targets``, and the logits."""
    logits = model(inputs)
    return F.cross_entropy(logits, targets), logits


class DistillationLoss:
    """Hinton's distillation loss ``(1 - alpha) * CE(student, targets) + alpha * T^2 * KL(softmax(teacher / T) ||
    softmax(student / T))``, the KL averaged over the batch; the teacher runs once per batch in eval mode without
    gradients, moved to the inputs' device."""

    def __init__(self, teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.9) -> None:
        if not temperature > 0 or not 0 <= alpha <= 1:
            raise ValueError(f"DistillationLoss: temperature={temperature!r} must be > 0 and alpha={alpha!r} in "
                             f"[0, 1].")
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha

    def __call__(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        self.teacher.to(inputs.device).eval()
        with torch.no_grad():
            teacher_logits = self.teacher(inputs)
        logits = model(inputs)
        t = self.temperature
        kl = F.kl_div(F.log_softmax(logits.float() / t, dim=1), F.log_softmax(teacher_logits.float() / t, dim=1),
                      reduction="batchmean", log_target=True)
        return (1 - self.alpha) * F.cross_entropy(logits, targets) + self.alpha * t * t * kl, logits


OptimiserFactory = Callable[["TrainConfig", Iterable], torch.optim.Optimizer]
"""``(config, params) -> optimiser``: params are parameters or param-group dicts, as torch.optim takes them."""
SchedulerFactory = Callable[["TrainConfig", torch.optim.Optimizer], "LRScheduler | None"]
"""``(config, optimiser) -> per-epoch schedule`` (None: a constant rate); the warm-up is added around it."""


def _sgd(config: TrainConfig, params: Iterable) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                           nesterov=config.nesterov)


def _adam(config: TrainConfig, params: Iterable) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


def _adamw(config: TrainConfig, params: Iterable) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def _cosine(config: TrainConfig, optimiser: torch.optim.Optimizer) -> LRScheduler:
    return CosineAnnealingLR(optimiser, T_max=max(1, config.epochs - config.warmup_epochs))


def _step(config: TrainConfig, optimiser: torch.optim.Optimizer) -> LRScheduler:
    return StepLR(optimiser, step_size=config.step_size, gamma=config.gamma)


OPTIMISERS: Registry[OptimiserFactory] = Registry("optimiser", {"adam": _adam, "adamw": _adamw, "sgd": _sgd})
"""The optimisers ``TrainConfig.optimiser`` names (matched regardless of case, so 'AdamW' is 'adamw')."""
SCHEDULERS: Registry[SchedulerFactory] = Registry("scheduler", {
    "cosine": _cosine, "cosineannealinglr": _cosine, "step": _step, "steplr": _step, "none": lambda config, opt: None})
"""The schedules ``TrainConfig.scheduler`` names; torch's class names ('StepLR', 'CosineAnnealingLR') work too."""
CRITERIA: Registry[Callable[[], nn.Module]] = Registry("criterion", {"crossentropyloss": nn.CrossEntropyLoss})
"""Losses ``(logits, class indices) -> scalar`` by name, for configurations that name one (``criterion_loss``)."""
_NAMED = {"optimiser": OPTIMISERS, "scheduler": SCHEDULERS}


def criterion_loss(name: str) -> Loss:
    """The ``Loss`` of the criterion registered as ``name`` (KeyError listing the registered ones)."""
    criterion = CRITERIA[name]()

    def loss(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(inputs)
        return criterion(logits, targets), logits

    return loss


def make_optimiser(config: TrainConfig, params: Iterable) -> torch.optim.Optimizer:
    """The optimiser ``config`` names over ``params`` (parameters, or param-group dicts as torch.optim takes)."""
    return OPTIMISERS[config.optimiser](config, params)


def make_scheduler(config: TrainConfig, optimiser: torch.optim.Optimizer) -> LRScheduler | None:
    """The per-epoch learning-rate schedule ``config`` names, after its warm-up; None for a constant rate."""
    main = SCHEDULERS[config.scheduler](config, optimiser)
    if not config.warmup_epochs:
        return main
    warmup = LinearLR(optimiser, start_factor=1 / (config.warmup_epochs + 1), total_iters=config.warmup_epochs)
    return warmup if main is None else SequentialLR(optimiser, [warmup, main], milestones=[config.warmup_epochs])


def fit(model: nn.Module, train_loader: Iterable, config: TrainConfig, *, loss: Loss | None = None,
        eval_loader: Iterable | None = None, param_groups: Iterable[dict[str, Any]] | None = None,
        on_epoch_end: Callable[[TrainResult], None] | None = None) -> TrainResult:
    """Train ``model`` in place as ``config`` says (``loss`` defaults to cross-entropy, ``param_groups`` to all its
    parameters), evaluating on ``eval_loader`` and calling ``on_epoch_end`` (every rank) after each epoch; the model
    ends in eval mode on the config's device. Under torchrun it trains with DistributedDataParallel on every rank."""
    loss = cross_entropy_loss if loss is None else loss
    device_type = training_device_type(config.device)
    with distributed.process_group(device_type) as group:
        device = torch.device("cuda", group.local_rank) if device_type == "cuda" else torch.device("cpu")
        model.to(device)
        optimiser = make_optimiser(config, model.parameters() if param_groups is None else param_groups)
        scheduler = make_scheduler(config, optimiser)
        amp = config.amp if config.amp is not None else device_type == "cuda"
        amp_dtype = (torch.float16 if device_type == "cuda" else torch.bfloat16) if amp else None
        scaler = torch.amp.GradScaler(device_type, enabled=amp_dtype is torch.float16)
        train = distributed.training_loader(train_loader, group, seed=config.seed or 0)
        path = config.checkpoint_dir / CHECKPOINT_NAME if config.checkpoint_dir is not None else None
        history: dict[str, list[float]] = {name: [] for name in HISTORY}
        start, checkpoint = 0, None
        if config.resume and path.is_file():
            start, history = _resume(path, model, optimiser, scheduler, scaler, train, config, group)
            checkpoint = path
        else:
            if config.resume and group.is_main:
                logger.info("No checkpoint %s to resume from: training from the start.", path)
            if config.seed is not None:
                _seed(config.seed)
        trained = distributed.wrap(model, group, device)
        if group.is_main and start < config.epochs:
            logger.info("Training epochs %d-%d of %d on %s, %d process(es)%s.", start + 1, config.epochs,
                        config.epochs, device, group.world_size, f", {amp_dtype} autocast" if amp_dtype else "")
        result = _result(history, start, checkpoint)
        for epoch in range(start, config.epochs):
            began = time.perf_counter()
            if hasattr(getattr(train, "sampler", None), "set_epoch"):
                train.sampler.set_epoch(epoch)
            history["lr"].append(optimiser.param_groups[0]["lr"])
            train_loss, train_accuracy = _train_epoch(trained, train, optimiser, scaler, loss, device, amp_dtype,
                                                      f"epoch {epoch + 1}/{config.epochs}", config, group)
            distributed.broadcast_from_main(model.buffers(), group)  # every rank evaluates and ends with rank 0's
            history["train_loss"].append(train_loss)
            history["train_accuracy"].append(train_accuracy)
            if scheduler is not None:
                scheduler.step()
            if eval_loader is not None:
                eval_accuracy, eval_loss = evaluate(model, eval_loader, device=device)
                history["eval_accuracy"].append(eval_accuracy)
                history["eval_loss"].append(eval_loss)
            history["seconds"].append(time.perf_counter() - began)
            if path is not None:
                if group.is_main:
                    _write_checkpoint(path, model, optimiser, scheduler, scaler, train, epoch + 1, history, config,
                                      group)
                checkpoint = path
            result = _result(history, epoch + 1, checkpoint)
            if group.is_main:
                evaluated = f", eval accuracy {history['eval_accuracy'][-1]:.2f} %" if eval_loader is not None else ""
                logger.info("epoch %d/%d: loss %.4f, train accuracy %.2f %%%s, lr %.3g, %.1f s", epoch + 1,
                            config.epochs, train_loss, train_accuracy, evaluated, history["lr"][-1],
                            history["seconds"][-1])
            if on_epoch_end is not None:
                on_epoch_end(result)
        model.eval()
        return result


def train_epochs(model: nn.Module, loader: Iterable, epochs: int, lr: float, *, progress: bool = False) -> nn.Module:
    """Train ``model`` on the CPU with Adam, a per-epoch cosine schedule and cross-entropy for ``epochs`` passes over
    ``loader`` (``fit`` with the defaults, the random generators left as they are); returns it in eval mode."""
    fit(model, loader, TrainConfig(epochs=epochs, lr=lr, device="cpu", seed=None, progress=progress))
    return model


def evaluate(model: nn.Module, loader: Iterable, device: str | torch.device | None = None) -> tuple[float, float]:
    """(top-1 accuracy in %, mean cross-entropy) of ``model`` on ``loader``, in eval mode without gradients (the
    training mode is restored), on ``device`` (default: the model's). Under torch.distributed every rank evaluates its
    share and the counts are summed over the ranks, so each rank returns the whole set's result: call it on all."""
    module = distributed.unwrap(model)
    if device is None:
        first = next(itertools.chain(module.parameters(), module.buffers()), None)
        device = first.device if first is not None else torch.device("cpu")
    device = torch.device(device)
    group = distributed.current()
    was_training = module.training
    module.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    total = 0
    with torch.no_grad():
        for inputs, targets in distributed.evaluation_loader(loader, group):
            inputs, targets = inputs.to(device), targets.to(device)
            logits = module(inputs)
            loss_sum += F.cross_entropy(logits.float(), targets, reduction="sum")
            correct += (logits.argmax(dim=1) == targets).sum()
            total += len(targets)
    module.train(was_training)
    loss_sum, correct, total = distributed.all_reduce_sum([loss_sum.item(), correct.item(), total], group, device)
    if total == 0:
        raise ValueError("evaluate: the loader yielded no samples; give it a loader with at least one batch.")
    return 100.0 * correct / total, loss_sum / total


def accuracy(model: nn.Module, loader: Iterable) -> float:
    """Top-1 accuracy of ``model`` on ``loader``, in percent (eval mode, no gradients, training mode restored); under
    torch.distributed the whole set's, counted over all ranks (call it on every rank)."""
    return evaluate(model, loader)[0]


def training_device_type(name: str) -> str:
    """'cuda' or 'cpu' for a TrainConfig device ('cpu', 'cuda', 'auto'); ValueError for 'cuda' without one."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("TrainConfig: device='cuda' but torch.cuda.is_available() is False (a CPU-only torch build or "
                         "no visible GPU); use device 'cpu' or 'auto'.")
    return "cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu"


def _train_epoch(model: nn.Module, loader: Iterable, optimiser: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                 loss: Loss, device: torch.device, amp_dtype: torch.dtype | None, label: str, config: TrainConfig,
                 group: ProcessGroup) -> tuple[float, float]:
    """One pass over ``loader``; returns the mean loss and the accuracy (%) over all ranks' samples."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    show_bar = config.progress and group.is_main and sys.stderr.isatty()
    bar = tqdm(loader, desc=label, disable=not show_bar, leave=False)
    for step, (inputs, targets) in enumerate(bar, 1):
        inputs, targets = inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)
        optimiser.zero_grad()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            value, logits = loss(model, inputs, targets)
        scaler.scale(value).backward()
        scaler.step(optimiser)
        scaler.update()
        loss_sum += value.detach() * len(targets)
        correct += (logits.detach().argmax(dim=1) == targets).sum()
        seen += len(targets)
        log_now = config.log_every and step % config.log_every == 0 and group.is_main
        if show_bar or log_now:
            running_loss, running_accuracy = loss_sum.item() / seen, 100.0 * correct.item() / seen
            bar.set_postfix(loss=f"{running_loss:.4f}", acc=f"{running_accuracy:.1f}%", refresh=False)
            if log_now:
                logger.info("%s step %d: loss %.4f, accuracy %.2f %%", label, step, running_loss, running_accuracy)
    loss_total, correct_total, seen_total = distributed.all_reduce_sum([loss_sum.item(), correct.item(), seen], group,
                                                                       device)
    if seen_total == 0:
        raise ValueError("fit: the training loader yielded no batches; give it a loader with at least one batch.")
    return loss_total / seen_total, 100.0 * correct_total / seen_total


def _result(history: Mapping[str, list[float]], epoch: int, checkpoint: Path | None) -> TrainResult:
    return TrainResult(**{name: list(history[name]) for name in HISTORY}, epoch=epoch, checkpoint=checkpoint)


def _seed(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def _loader_generators(loader: Iterable) -> list[torch.Generator]:
    """The generators a DataLoader draws its order and worker seeds from (its own and its sampler's), each once."""
    found: list[torch.Generator] = []
    for g in (getattr(loader, "generator", None), getattr(getattr(loader, "sampler", None), "generator", None)):
        if isinstance(g, torch.Generator) and all(g is not f for f in found):
            found.append(g)
    return found


def _rng_state(loader: Iterable) -> dict[str, Any]:
    """The random generators' states the next epoch depends on, as tensors and numbers (weights_only-loadable)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
            "python": random.getstate(),
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                      "cached_gaussian": float(cached_gaussian)},
            "loader": [g.get_state() for g in _loader_generators(loader)]}


def _set_rng_state(state: Mapping[str, Any], loader: Iterable) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    generators = _loader_generators(loader)
    if len(generators) != len(state["loader"]):
        logger.warning("The training loader has %d random generator(s), the checkpoint %d: the data order differs "
                       "from an uninterrupted run's.", len(generators), len(state["loader"]))
    for generator, saved in zip(generators, state["loader"], strict=False):
        generator.set_state(saved)


def _write_checkpoint(path: Path, model: nn.Module, optimiser: torch.optim.Optimizer, scheduler: LRScheduler | None,
                      scaler: torch.amp.GradScaler, loader: Iterable, epoch: int, history: dict[str, list[float]],
                      config: TrainConfig, group: ProcessGroup) -> None:
    """Everything a resumed run needs, written atomically (a temporary file beside ``path``, then a rename)."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "epoch": epoch,
               "model": model.state_dict(), "optimiser": optimiser.state_dict(),
               "scheduler": scheduler.state_dict() if scheduler is not None else None, "scaler": scaler.state_dict(),
               "rng": _rng_state(loader), "config": config.as_dict(), "history": history,
               "world_size": group.world_size, "backend": group.backend}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    write_atomically(path, buffer.getvalue())


def _resume(path: Path, model: nn.Module, optimiser: torch.optim.Optimizer, scheduler: LRScheduler | None,
            scaler: torch.amp.GradScaler, loader: Iterable, config: TrainConfig, group: ProcessGroup
            ) -> tuple[int, dict[str, list[float]]]:
    """Load ``path`` into the training state; returns the epochs it completed and its history."""
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(saved, Mapping) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"Cannot resume from {path}: not a checkpoint of quantlib.training (no 'format': "
                         f"'{CHECKPOINT_FORMAT}'); give another checkpoint_dir or set resume=False.")
    try:
        model.load_state_dict(saved["model"])
        optimiser.load_state_dict(saved["optimiser"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(f"Cannot resume from {path}: it holds another model or optimiser ({str(exc).strip()[:300]}); "
                         f"give another checkpoint_dir or set resume=False.") from exc
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])
    if saved["scaler"]:
        scaler.load_state_dict(saved["scaler"])
    _set_rng_state(saved["rng"], loader)
    if group.is_main:
        if saved["world_size"] != group.world_size:
            logger.warning("Resuming %s, written by %d process(es), with %d: the global batch changes from %d x to "
                           "%d x the loader's batch size, and the data order from an uninterrupted run's.", path,
                           saved["world_size"], group.world_size, saved["world_size"], group.world_size)
        now = config.as_dict()
        changed = {k: (v, now[k]) for k, v in saved["config"].items()
                   if k not in ("resume", "progress", "log_every") and now.get(k) != v}
        if changed:
            logger.warning("Resuming %s with a different config (%s): the optimiser and scheduler continue from the "
                           "checkpoint's state.", path,
                           ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))
        logger.info("Resuming %s after epoch %d.", path, saved["epoch"])
    return saved["epoch"], {k: list(v) for k, v in saved["history"].items()}
