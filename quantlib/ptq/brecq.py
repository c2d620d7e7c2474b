"""BRECQ (Li et al. 2021) and QDrop (Wei et al. 2022): AdaRound's learned rounding, reconstructed per block (a
residual block, or a layer with its activation where there is no block) rather than per layer.

BRECQ: per unit, in execution order, first the rounding variables of all the unit's layers are learned together
(AdaRound's objective on the unit's output, the unit's own activation quantisers off), then, the weights hardened,
the step sizes of the unit's activation quantisers are learned by LSQ on the same output error. QDrop: one joint
phase, rounding and step sizes together, the unit's activations quantised but each element of every quantised
activation (and of the unit's input) replaced by its float value with probability ``drop_prob``. The unit's input is
its input in the quantised model with the earlier units done, recorded once per unit; its float input and the target,
its float output, are the float model's, recorded for every unit in one pass before the first is reconstructed (a
DianaModule's graph keeps no float weights, so float mode later would run the rounded weights of units already done).
With ``pow2`` the learned steps are mapped back to powers of two at the end. The output error is the squared error
summed over channels (``loss='mse'``, the reference's default) or weighted by the diagonal Fisher information of the
unit's output (``loss='fisher_diag'``, the paper's eq. 10: ``quantlib.ptq.fisher``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.fx as fx
from torch.nn.utils import parametrize
from tqdm import tqdm

from quantlib.calibration import model_inputs
from quantlib.modules.qactivations import QReLU
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.ptq.adam import Adam
from quantlib.ptq.adaround import AdaRoundParams, SoftRounding, beta_at, rectified_sigmoid, rounding_regulariser
from quantlib.ptq.capture import float_mode
from quantlib.ptq.fisher import fisher_weights
from quantlib.ptq.method import PTQMethod
from quantlib.ptq.options import PTQOptions
from quantlib.ptq.rtn import RANGES
from quantlib.ptq.scope import Scope
from quantlib.ptq.units import Unit, reconstruction_units
from quantlib.scales import clip_scales_pow2
from quantlib.specs import QHParamsInitStrategy
from quantlib.verification import record

LOSSES = ("mse", "fisher_diag")


@dataclass(frozen=True)
class BrecqParams:
    """AdaRound's parameters (``iters``, ``weight``, ``beta_*``, ``warmup``, ``lr``: see ``AdaRoundParams``) for the
    rounding; ``act_iters`` / ``act_lr``: the LSQ step-size phase (the reference: 20000 steps at 4e-5; 1000 at 4e-4
    here, Adam on each quantiser's upper clip, ``n_levels - 1`` steps); ``loss``: 'mse' or 'fisher_diag'."""

    iters: int = 1000
    act_iters: int = 1000
    weight: float = 0.01
    beta_start: float = 20.0
    beta_end: float = 2.0
    warmup: float = 0.2
    lr: float = 1e-2
    act_lr: float = 4e-4
    batch_size: int = 32
    ranges: str = "mse"
    loss: str = "mse"
    seed: int = 0
    progress: bool = False

    def check(self) -> str | None:
        if self.ranges not in RANGES:
            return f"ranges={self.ranges!r} is not one of {RANGES}."
        if self.loss not in LOSSES:
            return f"loss={self.loss!r} is not one of {LOSSES}."
        if min(self.iters, self.act_iters, self.batch_size) < 1:
            return "iters, act_iters and batch_size must be >= 1."
        if not 0.0 <= self.warmup < 1.0 or self.beta_start < self.beta_end or self.beta_end <= 0:
            return "warmup must be in [0, 1) and beta must anneal down (beta_start >= beta_end > 0)."
        if self.weight < 0 or self.lr <= 0 or self.act_lr <= 0:
            return "weight must be >= 0, lr and act_lr > 0."
        return None


@dataclass(frozen=True)
class QDropParams(BrecqParams):
    """BRECQ's parameters plus ``drop_prob``, the probability that a quantised activation element is replaced by its
    float value during reconstruction (the paper's 0.5); ``act_iters`` is unused (one joint phase of ``iters``)."""

    drop_prob: float = 0.5

    def check(self) -> str | None:
        if not 0.0 <= self.drop_prob <= 1.0:
            return f"drop_prob={self.drop_prob} must be in [0, 1]."
        return super().check()


class Brecq(PTQMethod):
    """Block reconstruction of the rounding, then of the activation step sizes; ``units`` lists the units' names."""

    name = "brecq"
    Params = BrecqParams
    joint = False

    def initial_ranges(self) -> QHParamsInitStrategy:
        return QHParamsInitStrategy(self.params.ranges)

    def refine(self, gm: fx.GraphModule, batches: list, options: PTQOptions, scope: Scope) -> None:
        generator = torch.Generator().manual_seed(self.params.seed)
        names = scope.layer_names()
        units = [unit for unit in reconstruction_units(gm) if names & set(unit.layers)]
        self.units = [unit.name for unit in units]
        floats = float_values(gm, units, batches)
        for unit in tqdm(units, desc=self.name, disable=not self.params.progress, leave=False):
            reconstruct(gm, unit, batches, floats, self.params, self.joint, generator, scope)
        if options.pow2:
            clip_scales_pow2(gm)


class QDrop(Brecq):
    """Block reconstruction of rounding and step sizes together, with activations randomly dropped to float."""

    name = "qdrop"
    Params = QDropParams
    joint = True


def float_values(gm: fx.GraphModule, units: list[Unit], batches: list) -> dict[str, torch.Tensor]:
    """The float model's value at every unit's input and output over ``batches``, in one pass before any unit is
    reconstructed (where ``remember_float_parameters`` did not run, float mode keeps the current, rounded weights)."""
    wanted = {name for unit in units for name in (unit.source.name, unit.sink.name)}
    with float_mode(gm):
        records = [record(gm, *model_inputs(gm, b), wanted) for b in batches]
    return {name: torch.cat([r[name] for r in records]) for name in wanted}


def reconstruct(gm: fx.GraphModule, unit: Unit, batches: list, floats: dict[str, torch.Tensor], params: BrecqParams,
                joint: bool, generator: torch.Generator, scope: Scope) -> None:
    """Learn the rounding of ``unit``'s layers and the steps of its activation quantisers that are in ``scope``
    (see the module doc), in place; ``floats``: the float model's values (``float_values``)."""
    quantised = [record(gm, *model_inputs(gm, b), [unit.source.name]) for b in batches]
    weights = fisher_weights(gm, unit, batches, params.batch_size, activations=joint) \
        if params.loss == "fisher_diag" else None
    data = UnitData(torch.cat([r[unit.source.name] for r in quantised]), floats[unit.source.name],
                    floats[unit.sink.name], weights)
    names = scope.layer_names()
    layers = [gm.get_submodule(name) for name in unit.layers if name in names]
    in_scope = set(scope.activations)  # floor (power-of-two) quantisers keep their steps
    rounding_steps = [m for m in unit.graph.modules() if isinstance(m, QModule) and m.spec.qop == "round"
                      and not isinstance(m, (QConv2d, QLinear)) and m in in_scope
                      and m.spec.qrange.offset is not None]  # LSQ learns steps of fixed-offset grids
    if joint:
        _learn(unit, layers, rounding_steps, data, params, params.iters, params.drop_prob, generator)
    else:
        _learn(unit, layers, [], data, params, params.iters, 0.0, generator)
        _learn(unit, [], rounding_steps, data, params, params.act_iters, 0.0, generator)


@dataclass(frozen=True)
class UnitData:
    """A unit's recorded input in the quantised and in the float model, its float output, and the Fisher weights of
    its output elements (None: plain squared error)."""

    x_q: torch.Tensor
    x_fp: torch.Tensor
    target: torch.Tensor
    weights: torch.Tensor | None = None


def _learn(unit: Unit, layers: list[QConv2d | QLinear], steps: list[QModule], data: UnitData, params: BrecqParams,
           iters: int, drop: float, generator: torch.Generator) -> None:
    """Minimise the unit's output error over the rounding of ``layers`` (regularised as AdaRound, Adam at ``lr``)
    and the step sizes of the quantisers ``steps`` (LSQ, Adam at ``act_lr``). While rounding is learned without
    steps, the unit's activation quantisers are off."""
    if not layers and not steps:
        return
    activations = [m for m in unit.graph.modules() if isinstance(m, QModule) and not isinstance(m, (QConv2d, QLinear))]
    states = {m: m.is_quantised for m in activations}
    specs = {m: m.spec for m in steps}
    soft = [SoftRounding(layer) for layer in layers]
    for layer, weights in zip(layers, soft, strict=True):
        parametrize.register_parametrization(layer, "weight", weights, unsafe=True)
        layer.is_quantised = False  # the parametrised weight is already on its (soft) grid
    if layers and not steps:
        for m in activations:
            m.is_quantised = False
    for m in steps:
        m.spec = replace(m.spec, qop="lsq")  # round's forward, with LSQ's gradient for the step
        m.clip_hi.requires_grad_(True)
    hooks = [m.register_forward_hook(_dropper(drop, generator)) for m in activations if m.is_quantised] \
        if drop > 0 else []
    rounding = Adam([w.v for w in soft], lr=params.lr)
    step_sizes = Adam([m.clip_hi for m in steps], lr=params.act_lr)
    schedule = AdaRoundParams(iters=iters, beta_start=params.beta_start, beta_end=params.beta_end,
                              warmup=params.warmup)
    try:
        for step in range(iters):
            index = torch.randint(0, data.x_q.shape[0], (min(params.batch_size, data.x_q.shape[0]),),
                                  generator=generator)
            x = data.x_q[index]
            if drop > 0:
                x = torch.where(torch.rand(x.shape, generator=generator) < drop, data.x_fp[index], x)
            weights = None if data.weights is None else data.weights[index]
            loss = reconstruction_error(unit.graph(x), data.target[index], weights)
            beta = beta_at(step, schedule) if soft else None
            if beta is not None:
                loss = loss + params.weight * sum(rounding_regulariser(rectified_sigmoid(w.v), beta) for w in soft)
            grads = torch.autograd.grad(loss, [w.v for w in soft] + [m.clip_hi for m in steps])
            rounding.step(grads[:len(soft)])
            step_sizes.step(grads[len(soft):])
            for m in steps:
                m.clip_hi.data.clamp_(min=1e-8)
    finally:
        for hook in hooks:
            hook.remove()
        for m, spec in specs.items():
            m.spec = spec
        for m, state in states.items():
            m.is_quantised = state
        for layer, weights in zip(layers, soft, strict=True):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=False)
            with torch.no_grad():
                layer.weight.copy_(weights.hard())
            layer.is_quantised = True


def reconstruction_error(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The squared error, each element weighted by ``weights ** 2`` if given, summed over channels and averaged over
    the rest (samples, positions), as the reference's ``lp_loss`` and its 'fisher_diag' loss."""
    error = output - target if weights is None else (output - target) * weights
    return error.pow(2).sum(1).mean()


def _dropper(probability: float, generator: torch.Generator) -> Callable:
    """A forward hook that replaces each element of a quantiser's output by its float input with ``probability``."""
    def hook(module: QModule, args: tuple, output: torch.Tensor) -> torch.Tensor:
        value = torch.relu(args[0]) if isinstance(module, QReLU) else args[0]
        return torch.where(torch.rand(output.shape, generator=generator) < probability, value, output)
    return hook
