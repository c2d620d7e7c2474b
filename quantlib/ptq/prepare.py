"""The fake-quantised model a PTQ method starts from: every Conv2d / Linear with weights rounded to nearest, every
activation quantised, ranges calibrated on the user's data; the head and stem at 8 bits on request."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace

import torch.fx as fx
from torch import nn

from quantlib.calibration import calibrate
from quantlib.editors.base import ComposedEditor
from quantlib.editors.canonicalise import canonicalise
from quantlib.fake_quantisation import QuantisationSpec, float_to_fake_editors
from quantlib.modules.qactivations import QIdentity, QReLU
from quantlib.modules.qadd import QHarmonisedAdd
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.modules.qmodule import QModule
from quantlib.preflight import GENERIC, preflight, raise_refusals
from quantlib.ptq.options import PTQOptions
from quantlib.specs import QHParamsInitStrategy, QRange

HEAD_STEM_BITS = 8
MINMAX = QHParamsInitStrategy("minmax")


@dataclass(frozen=True)
class Layer:
    """A quantised linear layer: its module name, its node, and the activation quantiser that produces its input."""

    name: str
    module: QConv2d | QLinear
    node: fx.Node
    input_quantiser: QModule | None


def ptq_spec(options: PTQOptions, init: QHParamsInitStrategy) -> QuantisationSpec:
    """Weights rounded to nearest (per channel or per tensor); ReLU outputs unsigned, other activations signed, floor
    with power-of-two scales, else rounded half up; every range set from the data by ``init``."""
    act_qop = "floor" if options.pow2 else "round"
    return QuantisationSpec.from_spec({
        "weights": {"qrange": {"bitwidth": options.w_bits, "signed": True}, "qop": "round", "init": init,
                    "granularity": "per-outchannel_weights" if options.per_channel else "per-array"},
        "relu": {"qrange": {"bitwidth": options.a_bits, "signed": False}, "qop": act_qop, "init": init},
        "activations": {"qrange": {"bitwidth": options.a_bits, "signed": True}, "qop": act_qop, "init": init},
    })


def quantised_layers(gm: fx.GraphModule) -> list[Layer]:
    """The quantised Conv2d / Linear layers of ``gm`` in execution order, each with its input's quantiser."""
    modules = dict(gm.named_modules())
    layers = []
    for node in gm.graph.nodes:
        if node.op == "call_module" and isinstance(modules[node.target], (QConv2d, QLinear)):
            layers.append(Layer(node.target, modules[node.target], node, _producing_quantiser(node, modules)))
    return layers


def _producing_quantiser(node: fx.Node, modules: dict[str, nn.Module]) -> QModule | None:
    """The activation quantiser whose grid ``node``'s input is on: found back through ops of one input that keep a
    grid (reshapes, pools); an add's is its output quantiser."""
    source = node.args[0]
    while isinstance(source, fx.Node) and source.op in ("call_module", "call_function", "call_method"):
        module = modules.get(source.target) if source.op == "call_module" else None
        if isinstance(module, (QIdentity, QReLU)):
            return module
        if isinstance(module, QHarmonisedAdd):
            return module.output_quantiser
        inputs = [a for a in source.all_input_nodes if a.op != "get_attr"]
        if isinstance(module, (QConv2d, QLinear)) or len(inputs) != 1:
            return None
        source = inputs[0]
    return None


def _respec(quantiser: QModule, bits: int) -> None:
    """Give an uncalibrated quantiser ``bits`` bits, same signedness, qop and granularity."""
    signed = quantiser.spec.qrange.is_signed
    qrange = QRange.from_spec({"bitwidth": bits, "signed": signed})
    quantiser.init_quantiser(replace(quantiser.spec, qrange=qrange), quantiser.qualname)


def input_quantisers(gm: fx.GraphModule) -> list[QModule]:
    """The quantisers that read the network's inputs."""
    modules = dict(gm.named_modules())
    return [modules[user.target] for node in gm.graph.nodes if node.op == "placeholder" for user in node.users
            if user.op == "call_module" and isinstance(modules[user.target], QModule)]


def prepare(model: nn.Module, calibration: Iterable, options: PTQOptions,
            init: QHParamsInitStrategy = MINMAX) -> fx.GraphModule:
    """The calibrated fake-quantised copy of ``model`` that PTQ methods refine, ranges set by ``init`` (``model`` is
    left untouched)."""
    batches = list(calibration)
    if not batches:
        raise ValueError("PTQ needs calibration data: the calibration iterable gave no batch.")
    first = batches[0][0] if isinstance(batches[0], (tuple, list)) else batches[0]
    gm = canonicalise(model, first[:1])
    raise_refusals(GENERIC.target, preflight(gm, GENERIC))
    gm = ComposedEditor(float_to_fake_editors(ptq_spec(options, init), quantise_outputs=False)).run(gm)
    if options.keep_head_stem_8bit:
        layers = quantised_layers(gm)
        head_stem = {layers[0].module, layers[-1].module, *input_quantisers(gm)}
        if layers[-1].input_quantiser is not None:
            head_stem.add(layers[-1].input_quantiser)
        for quantiser in head_stem:
            _respec(quantiser, HEAD_STEM_BITS)
    return calibrate(gm, batches)
