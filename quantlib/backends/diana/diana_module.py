"""``DianaModule``: the user's handle on a model on its way to DIANA. Its forward runs the model of the current stage,
so any training loop retrains it; each stage of the recipe of docs/diana-numerics.md is a method, called in order:

    dm = DianaModule.from_fp_model(model)      # 8-bit digital fake-quantised (BN folded, inputs and adds quantised)
    dm.calibrate(batches)                      # observers -> clipping bounds; retrain
    dm.map_scales(batches)                     # 7-bit ReLUs; analog layers: ternary weights + 6-bit ADC; retrain
    dm.clip_scales_pow2()                      # scales powers of two (frozen), analog BN as the chip's affine; retrain
                                               #   or, without retraining: dm.refine_weights(batches, "adaround")
    dm.map_to_hw()                             # biases on their grids: exact from here
    dm.integrize()                             # the integer model
    dm.export("out", "net")                    # DORY ONNX, its executable twin, goldens, config, report
"""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from quantlib.backends.diana.analog_batchnorm_keeper import AnalogBatchNormKeeper
from quantlib.backends.diana.analog_conv import AnalogConv2d
from quantlib.backends.diana.core_choice import AnalogPolicy, CoreChoice, Ineligible, choose_cores, layer_nodes
from quantlib.backends.diana.descriptors import load_descriptors, parse_descriptors, write_template
from quantlib.backends.diana.export import ExportResult, export_diana
from quantlib.backends.diana.hardware_rules import Core, Finding
from quantlib.backends.diana.report import LayerReport, Report, layer_reports
from quantlib.backends.diana.target import DIANA
from quantlib.calibration import model_inputs
from quantlib.editors.base import ComposedEditor
from quantlib.editors.canonicalise import FoldBatchNorm, canonicalise
from quantlib.editors.fake2true import to_exact
from quantlib.errors import QuantlibError
from quantlib.fake_quantisation import QuantisationSpec, float_to_fake_editors
from quantlib.graphs.tracing import ensure_shapes
from quantlib.preflight import preflight, raise_refusals
from quantlib.ptq import PTQOptions, get_method
from quantlib.ptq.scope import Scope
from quantlib.quantised_layers import quantised_layers
from quantlib.staging import StagedModule, StageError

logger = logging.getLogger(__name__)

PTQ_WEIGHT_METHODS = ("bias_correction", "adaround", "brecq", "qdrop")
"""The PTQ methods ``refine_weights`` runs: those that change weights or biases, not ranges."""

DIANA_8BIT = QuantisationSpec()
"""The first stage: int8 floor weights, 8-bit unsigned PACT ReLUs, 8-bit signed floor activations
(docs/diana-numerics.md)."""


class DianaModule(StagedModule):
    """A model on its way to DIANA (see the module doc); build it with ``from_fp_model``."""

    STAGES = DIANA.stages

    def __init__(self, gm: fx.GraphModule, choice: CoreChoice, reference_input: torch.Tensor | None) -> None:
        super().__init__(gm)
        self.choice = choice
        self.integer: fx.GraphModule | None = None
        self._integer_report: list[LayerReport] = []  # the report is fixed once the model is integer
        self.register_buffer("reference_input", torch.empty(0) if reference_input is None
                             else reference_input[:1].detach().clone())

    # -- building -------------------------------------------------------------------------------------------------
    @classmethod
    def from_fp_model(cls, model: nn.Module, example_input: torch.Tensor | None = None,
                      descriptors: str | os.PathLike | Mapping[str, str] | None = None,
                      analog: AnalogPolicy = "none", ineligible: Ineligible = "digital") -> DianaModule:
        """Trace and canonicalise ``model`` (left untouched), check every construct and hardware rule at once, choose
        each layer's core (``descriptors``: a YAML file or a mapping layer -> ANALOG / DIGITAL; else the ``analog``
        policy), fold BatchNorms into digital layers, and make it an 8-bit digital fake-quantised model with
        quantised inputs, outputs and harmonised adds. A construct DIANA cannot compute raises UnsupportedOpError
        listing them all (layer, source line, fix); broken hardware rules are logged and in ``dm.findings``, or,
        with ``ineligible="error"``, raised with them. ``example_input`` gives shapes (and makes ``x.size()``
        constants) until calibration, whose first input becomes the reference (goldens)."""
        gm = canonicalise(model, example_input, fold_batchnorm=False)
        refusals = preflight(gm, DIANA.constructs)
        cores = _descriptor_cores(descriptors, list(layer_nodes(gm)))
        choice = choose_cores(gm, analog, cores, ineligible)
        broken = [f for fs in choice.findings.values() for f in fs if f.severity == "error"]
        raise_refusals(DIANA.name, refusals, broken if ineligible == "error" else [])
        if broken:
            logger.warning("%d DIANA hardware rule(s) are broken; the model cannot be exported until they are fixed "
                           "(dm.findings lists them; ineligible='error' refuses the model):\n%s", len(broken),
                           "\n".join(f"  - {f}" for f in broken))
        editors = [FoldBatchNorm(keep=choice.analog), AnalogBatchNormKeeper(choice.analog),
                   *float_to_fake_editors(DIANA_8BIT, quantise_outputs=True, merge_adds=False)]
        return cls(ComposedEditor(editors).run(gm), choice, example_input)  # gm is canonicalise's own copy

    # -- the stages (rows of DIANA_STAGES: quantlib/backends/diana/target.py) --------------------------------------
    def calibrate(self, batches: Iterable, *, progress: bool = False) -> DianaModule:
        """Initialise every quantiser from ``batches`` (tensors or (input, target) pairs); again to re-calibrate."""
        return self.run_stage("calibrate", self._remembering_first_input(batches), progress=progress)

    def map_scales(self, batches: Iterable | None = None, *, progress: bool = False) -> DianaModule:
        """Move every layer to its core's bit-widths: 7-bit ReLUs; analog layers get ternary weights (initialised
        from the weights) and 6-bit ADCs, calibrated on ``batches`` (needed when there are analog layers); nothing
        else is re-calibrated. Every Parameter that was trained so far is kept; the ADCs' clips are new."""
        before = {id(p) for p in self.parameters()}
        self.run_stage("map_scales", batches, progress=progress)
        added = [name for name, p in self.named_parameters() if id(p) not in before]
        if added:
            logger.info("map_scales added %d parameters (%s): build the optimiser again, e.g. "
                        "torch.optim.Adam(dm.param_groups(), lr), to train them.", len(added), ", ".join(added))
        return self

    def clip_scales_pow2(self) -> DianaModule:
        """Round every scale to a power of two (round below 128 levels, ceil otherwise), tie adds and pools again,
        keep every ADC no finer than its input x weight scale, and freeze the scales there: retraining from now on
        trains weights, biases and analog BatchNorms, which now compute the chip's integer affine after the ADC."""
        return self.run_stage("clip_scales_pow2")

    def refine_weights(self, batches: Iterable, method: str = "adaround", **params: Any) -> DianaModule:
        """Post-training quantisation in place of retraining, at the pow2 stage: ``method`` (one of
        ``PTQ_WEIGHT_METHODS``, with its ``params``) rounds every layer's weights on their final grids (8-bit
        digital, ternary analog; scales frozen powers of two) or corrects the biases, calibrated on ``batches``;
        every scale stays DIANA's. An analog layer's rounding is learned on its accumulation before the ADC."""
        self.require(Stage.POW2, "refine_weights")
        if method not in PTQ_WEIGHT_METHODS:
            raise ValueError(f"refine_weights: method {method!r} is not one of {list(PTQ_WEIGHT_METHODS)}; the others "
                             f"set clipping ranges, which DIANA's recipe fixes as powers of two.")
        chosen = get_method(method, **params)  # refuses unknown or wrongly typed parameters before any work
        batches = list(batches)
        if not batches:
            raise ValueError("refine_weights needs calibration batches: the iterable gave none.")
        chosen.refine(self.gm, batches, PTQOptions(pow2=True), Scope(quantised_layers(self.gm), []))
        return self

    def map_to_hw(self, batches: Iterable | None = None) -> DianaModule:
        """Put biases on their accumulators' grids: from here the fake-quantised forward is what the integer model
        computes. With ``batches``, check that element for element
        at every layer (raises QuantlibError naming the layers that differ)."""
        return self.run_stage("map_to_hw", batches)

    def integrize(self) -> DianaModule:
        """Build the integer model; from now on forward runs it (real input -> integers -> real output)."""
        self.run_stage("integrize")
        ensure_shapes(self.integer, self.reference())  # the editors on the way give their new nodes shapes
        return self

    def export(self, out_dir: str | os.PathLike, name: str = "network", dialect: str = "dory",
               sample: torch.Tensor | None = None, verify_on: torch.Tensor | None = None) -> ExportResult:
        """Write the DIANA deliverables (docs/export-format.md) into ``out_dir``, which appears complete or not at all.
        ``sample``: the input of the golden files (default: the first calibration input); ``verify_on``: inputs on
        which onnxruntime on the twin must equal the integer model at every layer (default: the sample)."""
        self.require(Stage.INTEGER, "export")
        sample = self.reference() if sample is None else sample[:1]
        return export_diana(self.integer, DIANA.layer_kinds, self.report(), sample, out_dir, name, dialect, verify_on)

    def set_analog_noise(self, sigma: float) -> DianaModule:
        """Noise-aware training: in training mode only, every analog tile's partial sum gets Gaussian noise of
        ``sigma`` x its ADC's full scale (never in eval mode, so never in exactness checks or exports); 0: off."""
        if sigma < 0:
            raise ValueError(f"Analog noise sigma must be >= 0, got {sigma}.")
        self.require(Stage.SCALES_MAPPED, "set_analog_noise", or_later=True)
        for module in self.gm.modules():
            if isinstance(module, AnalogConv2d):
                module.noise_sigma = float(sigma)
        return self

    def param_groups(self) -> list[dict[str, Any]]:
        """The trainable parameters as optimiser groups: weights, biases and BatchNorms; then the quantisers' learned
        clips, without weight decay (decay would shrink the ranges). ``torch.optim.SGD(dm.param_groups(), lr=...)``
        after a stage trains everything the stage left trainable."""
        clips, others = [], []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (clips if name.rpartition(".")[2] in ("clip_lo", "clip_hi") else others).append(p)
        return [{"params": others}, {"params": clips, "weight_decay": 0.0}]

    # -- inspection -----------------------------------------------------------------------------------------------
    @property
    def cores(self) -> dict[str, Core]:
        """The core of every layer."""
        return dict(self.choice.cores)

    @property
    def findings(self) -> list[Finding]:
        """Every hardware rule a layer breaks on its core (errors and warnings), known from ``from_fp_model`` on."""
        return [f for fs in self.choice.findings.values() for f in fs]

    def report(self) -> Report:
        """Per layer: core, geometry, bits, scales as 2^k, requantisation and hardware-rule findings (scales and
        shifts once the model is hardware-mapped); ``print`` shows it as a table."""
        if self.stage is Stage.INTEGER:
            return Report(self._integer_report)
        exact = self.exact_model() if self.stage >= Stage.HW_MAPPED else None
        return Report(layer_reports(self.gm, exact, self.choice, DIANA.layer_kinds))

    def __repr__(self) -> str:
        cores = list(self.cores.values())
        return (f"DianaModule(stage={self.stage.label!r}, {cores.count('digital')} digital and "
                f"{cores.count('analog')} analog layers)\n{self.report()}")

    def describe(self, path: str | os.PathLike) -> Path:
        """Write a descriptor template: every layer with its current core and, as comments, the rules it breaks."""
        return write_template(path, {name: (core, self.choice.findings[name])
                                     for name, core in self.choice.cores.items()})

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        if self.stage is Stage.INTEGER:
            out = self.integer(*inputs).to(inputs[0].dtype)
            if self.training and torch.is_grad_enabled():
                return _RefuseBackward.apply(out, torch.zeros((), requires_grad=True))
            return out
        return self.gm(*inputs)

    # -- state ----------------------------------------------------------------------------------------------------
    def __reduce_ex__(self, protocol):
        raise QuantlibError("A DianaModule is not pickled (torch.save(dm) would need torch.load(weights_only=False), "
                            "which runs code from the file): save torch.save(dm.state_dict(), path) or a quantlib "
                            "checkpoint (quantlib.checkpoint.save_checkpoint), and rebuild with "
                            "DianaModule.from_fp_model(model, ...).load_state_dict(torch.load(path, "
                            "weights_only=True)) at any stage.")

    def __deepcopy__(self, memo: dict) -> DianaModule:
        copied = DianaModule.__new__(DianaModule)
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied

    def get_extra_state(self) -> dict[str, Any]:
        return {"stage": self.stage.label, "cores": self.cores}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Checked and applied by ``load_state_dict``."""

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Load a DianaModule state dict of any stage into a module fresh from ``from_fp_model`` (same model, same
        cores): the module is rebuilt to the saved stage, its values loaded, and an integer model re-derived."""
        extra = state_dict.get("_extra_state")
        if not isinstance(extra, Mapping) or "stage" not in extra or "reference_input" not in state_dict:
            raise QuantlibError("This state dict has no DianaModule stage ('_extra_state'); it was not written by "
                                "DianaModule.state_dict().")
        stages = {stage.label: stage for stage in Stage}
        if extra["stage"] not in stages:
            raise QuantlibError(f"The state dict's stage {extra['stage']!r} is not one of {list(stages)}.")
        target = stages[extra["stage"]]
        if dict(extra["cores"]) != self.cores:
            changed = sorted(k for k in set(extra["cores"]) | set(self.cores)
                             if extra["cores"].get(k) != self.cores.get(k))
            raise QuantlibError(f"The state dict was saved with other cores for layers {changed}; build the "
                                f"DianaModule with the same descriptors / analog policy (saved: "
                                f"{dict(extra['cores'])}).")
        if self.stage > Stage.QUANTISED:
            raise QuantlibError("load_state_dict needs a DianaModule fresh from from_fp_model().")
        fresh = self.gm
        self.gm = copy.deepcopy(fresh)  # rebuilt to the saved stage; put back if the values do not fit
        hw_mapped = min(target, Stage.HW_MAPPED)
        try:
            self.rebuild(hw_mapped)
            self.reference_input = state_dict["reference_input"].clone()
            fake_state = {k: v for k, v in state_dict.items() if not k.startswith("integer.")}
            result = super().load_state_dict(fake_state, strict, assign)
        except BaseException:
            self.gm = fresh
            raise
        self.stage = hw_mapped
        if target is Stage.INTEGER:
            self.integrize()
        return result

    # -- helpers --------------------------------------------------------------------------------------------------
    def _remembering_first_input(self, batches: Iterable) -> Iterable:
        """``batches``, keeping the first input as the reference (the golden files' input, the shapes' source)."""
        for i, batch in enumerate(batches):
            if i == 0:
                self.reference_input = model_inputs(self.gm, batch)[0][:1].detach().clone()
            yield batch

    def reference(self) -> torch.Tensor:
        """The reference input (the first calibration input): shapes, goldens."""
        return self.reference_input.to(next(self.gm.parameters()).dtype)

    def exact_model(self) -> fx.GraphModule:
        """The exact fake-quantised model (requantisations in place, real scales) of a hardware-mapped model."""
        return self.exact_of(self.gm)

    def exact_of(self, gm: fx.GraphModule) -> fx.GraphModule:
        """The exact twin of ``gm`` (this module's graph at some stage) on the reference input's shapes."""
        return to_exact(gm, self.reference(), DIANA.exact_editors())

    def exact_for_integer(self) -> fx.GraphModule:
        """The exact model the integer stage is built from; the report is fixed from it."""
        exact = self.exact_model()
        self._integer_report = layer_reports(self.gm, exact, self.choice, DIANA.layer_kinds)
        return exact

    def inputs_of(self, batches: Iterable) -> torch.Tensor:
        """The model inputs of ``batches``, concatenated."""
        return torch.cat([model_inputs(self.gm, b)[0] for b in batches])


Stage = DianaModule.Stage
"""DIANA's stages, in order (the rows of ``DIANA.stages``)."""


class _RefuseBackward(torch.autograd.Function):
    """The integer model's output in training mode: the value as it is, and a clear error from ``backward`` (the
    ``anchor`` that requires grad makes autograd call it)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        return out.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, None]:
        raise StageError("The integer stage computes integers and has no gradients: train the model before "
                         "integrize() (at stage 'hw_mapped' the forward already equals the integer model), or load "
                         "a checkpoint of an earlier stage.")


def _descriptor_cores(descriptors: str | os.PathLike | Mapping[str, str] | None, layers: list[str]
                      ) -> dict[str, Core] | None:
    if descriptors is None:
        return None
    if isinstance(descriptors, Mapping):
        return parse_descriptors(descriptors, layers)
    return load_descriptors(descriptors, layers)
