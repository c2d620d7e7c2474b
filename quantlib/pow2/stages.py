"""The power-of-two pipeline as a stage table: ``ptq`` puts weights and biases on power-of-two grids (activations stay
float), ``qat`` trains the weights with the activations float and keeps the best epoch, ``final_ptq`` calibrates the
input and output quantisers on the trained model and puts every bias on its accumulator's grid, so that the model
computes what its integer twin computes."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.fx as fx

from quantlib.calibration import Calibrate
from quantlib.editors.base import Editor
from quantlib.editors.fake2true import to_exact
from quantlib.editors.fake2true.requant_parameters import is_power_of_two
from quantlib.errors import EditorError
from quantlib.pow2.config import Pow2Config, TensorQuantisation
from quantlib.pow2.tensors import activation_quantisers, quantisers_of_kind, weight_quantisers
from quantlib.quantizers import pow2_ceil
from quantlib.scales import FreezeScales, Pow2Scales, quantise_biases
from quantlib.staging import StagedModule, StageRow, StageTable
from quantlib.training import Loss, TrainConfig, TrainResult, accuracy, fit
from quantlib.verification import FakeEqualsExact

logger = logging.getLogger(__name__)


def _largest(bits: int) -> int:
    """The largest level of a ``bits``-bit signed integer."""
    return 2 ** (bits - 1) - 1


class BiasGrids(Editor):
    """Step 1's biases: each on a grid of its own, ``bitwidth``-bit signed with scale ``max|b| / (2^(bits-1) - 1)``,
    rounded up to a power of two with ``power_of_2`` (the inputs have no scales yet)."""

    def __init__(self, bias: TensorQuantisation) -> None:
        self.bias = bias

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        for layer in weight_quantisers(gm):
            if layer.bias is None:
                continue
            largest = layer.bias.detach().abs().max()
            scale = largest / _largest(self.bias.bitwidth) if largest > 0 else torch.ones_like(largest)
            scale = pow2_ceil(scale) if self.bias.power_of_2 else scale
            layer.bias_scale = scale.expand(layer.bias.shape).clone()
        return gm


class AccumulatorBiases(Editor):
    """Every bias on its accumulator's grid (input scale x weight scale), as the integer model holds it, clipped to
    ``bitwidth`` signed bits (a warning names each layer whose bias is clipped)."""

    def __init__(self, example_input: torch.Tensor, bitwidth: int) -> None:
        self.example_input, self.bitwidth = example_input, bitwidth

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        quantise_biases(gm, self.example_input)
        for layer in weight_quantisers(gm):
            if layer.bias is None:
                continue
            limit = _largest(self.bitwidth) * layer.bias_scale
            clipped = int((layer.bias.detach().abs() > limit).sum())
            if clipped:
                logger.warning("Layer '%s': %d bias value(s) exceed the %d-bit accumulator grid (scale %s) and are "
                               "clipped; give quantization.bias more bits.", layer.qualname, clipped, self.bitwidth,
                               layer.bias_scale.min().item())
                with torch.no_grad():
                    layer.bias.copy_(torch.maximum(torch.minimum(layer.bias, limit), -limit))
        return gm


@dataclass(frozen=True)
class QATResult:
    """What the weight-only QAT did: ``history`` per epoch; the kept epoch (0: the PTQ weights, which no epoch beat)
    and its accuracy on the validation batches."""

    history: TrainResult
    best_epoch: int
    best_accuracy: float


class WeightOnlyQAT(Editor):
    """Train the weights (on their frozen grids, straight-through) with every activation float, as ``config`` says
    (with ``pow2_weights``, their scales are checked to stay powers of two); keep the weights with the best accuracy
    on ``validation``, the PTQ weights included, and hand the ``QATResult`` to ``record``. The model ends on the
    CPU, where calibration and the integer path run."""

    runs_forward = True

    def __init__(self, train: Iterable, validation: Iterable, config: TrainConfig, loss: Loss,
                 record: Callable[[QATResult], None], pow2_weights: bool = True) -> None:
        self.train, self.validation, self.config, self.loss, self.record = train, validation, config, loss, record
        self.pow2_weights = pow2_weights

    def requires(self, gm: fx.GraphModule) -> None:
        _check_weights_only(gm, "Weight-only QAT needs")

    def edit(self, gm: fx.GraphModule) -> fx.GraphModule:
        best = {"accuracy": accuracy(gm, self.validation), "epoch": 0, "state": copy.deepcopy(gm.state_dict())}

        def keep_best(result: TrainResult) -> None:
            if result.eval_accuracy[-1] > best["accuracy"]:
                best.update(accuracy=result.eval_accuracy[-1], epoch=result.epoch,
                            state=copy.deepcopy(gm.state_dict()))

        history = fit(gm, self.train, self.config, loss=self.loss, eval_loader=self.validation,
                      on_epoch_end=keep_best)
        gm.load_state_dict(best["state"])
        gm.to("cpu")
        self.record(QATResult(history, best["epoch"], best["accuracy"]))
        return gm

    def ensures(self, gm: fx.GraphModule) -> None:
        _check_weights_only(gm, "After weight-only QAT, expected")
        off = [q.qualname for q in weight_quantisers(gm) if not is_power_of_two(q.scale)]
        if off and self.pow2_weights:
            raise EditorError(f"Weight scales of {off} left the powers of two during QAT.")


def _check_weights_only(gm: fx.GraphModule, what: str) -> None:
    """EditorError unless every weight is quantised and every activation float."""
    float_weights = [q.qualname for q in weight_quantisers(gm) if not q.is_quantised]
    quantised = [q.qualname for q in activation_quantisers(gm) if q.is_quantised]
    if float_weights or quantised:
        raise EditorError(f"{what} quantised weights and float activations; float weights: {float_weights}, "
                          f"quantised activations: {quantised}.")


def _pow2_activations(config: Pow2Config) -> Callable[[fx.GraphModule], list]:
    """The input and output quantisers whose scales the config makes powers of two."""
    kinds = [kind for kind in ("input", "output") if config.tensor(kind).power_of_2]
    return lambda gm: [q for kind in kinds for q in quantisers_of_kind(gm, kind)]


def _qat_editors(model: Pow2Model, batches: None, *, train: Iterable, validation: Iterable,
                 loss: Loss) -> list[Editor]:
    """Step 2's editor: the weight-only QAT as the config's ``training`` says."""
    return [WeightOnlyQAT(train, validation, model.config.training, loss, model.record_qat,
                          model.config.weight.power_of_2)]


def _final_editors(model: Pow2Model, batches: list) -> list[Editor]:
    """Step 3's editors: calibrate the activations, map their scales, put the biases on their accumulators' grids and,
    when every rescale is a shift, check that the model computes what its integer twin computes."""
    config = model.config
    example = model.example_input
    checks = [FakeEqualsExact(example, lambda gm: to_exact(gm, example))] if model.shift_only else []
    return [Calibrate(batches, activation_quantisers), Pow2Scales(config.scale_rounding, _pow2_activations(config)),
            AccumulatorBiases(example, config.bias.bitwidth), *checks]


POW2_STAGES = StageTable("quantised", (  # the fake-quantised graph, nothing calibrated: it computes in float
    StageRow("ptq", "ptq",
             lambda m, batches: [Calibrate(batches, weight_quantisers),
                                 *([Pow2Scales(m.config.scale_rounding, weight_quantisers)]
                                   if m.config.weight.power_of_2 else []),
                                 BiasGrids(m.config.bias), FreezeScales()],
             requires="a fake-quantised model, nothing calibrated",
             ensures="weights and biases on (power-of-two) grids, frozen; activations float",
             takes_data=True, needs_data=True),
    StageRow("qat", "qat", _qat_editors, requires="quantised weights, float activations",
             ensures="the best epoch's weights, on the same grids; activations still float"),
    StageRow("final_ptq", "final_ptq", _final_editors, requires="trained weights, float activations",
             ensures="inputs and outputs on (power-of-two) grids, biases on their accumulators' grids: fake == "
                     "integer", takes_data=True, needs_data=True),
))


class Pow2Model(StagedModule):
    """A fake-quantised model going through ``POW2_STAGES``: ``ptq(batches)``, ``qat(train, validation, loss)``,
    ``final_ptq(batches)``; ``example_input`` is one input batch (shapes and the fake == integer check)."""

    STAGES = POW2_STAGES

    def __init__(self, gm: fx.GraphModule, config: Pow2Config, example_input: torch.Tensor) -> None:
        super().__init__(gm)
        self.config = config
        self.example_input = example_input
        self.qat_result: QATResult | None = None

    @property
    def shift_only(self) -> bool:
        """Whether every rescale of the integer model is a shift: weights, inputs and outputs on power-of-two grids
        (the biases then sit on their accumulators' grids, powers of two too)."""
        return all(self.config.tensor(kind).power_of_2 for kind in ("weight", "input", "output"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gm(x)

    def ptq(self, batches: Iterable) -> Pow2Model:
        """Step 1: weights and biases on (power-of-two) grids from ``batches``; activations float."""
        return self.run_stage("ptq", list(batches))

    def qat(self, train: Iterable, validation: Iterable, loss: Loss) -> Pow2Model:
        """Step 2: weight-only QAT as the config's ``training`` says, the best epoch on ``validation`` kept."""
        return self.run_stage("qat", None, train=train, validation=validation, loss=loss)

    def final_ptq(self, batches: Iterable) -> Pow2Model:
        """Step 3: inputs and outputs calibrated on ``batches``; biases on their accumulators' grids."""
        return self.run_stage("final_ptq", list(batches))

    def record_qat(self, result: QATResult) -> None:
        """Keep what step 2 did (``qat_result``)."""
        self.qat_result = result
