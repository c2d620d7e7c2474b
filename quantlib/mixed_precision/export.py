"""A configuration of a switchable model through the integer path: the model at that configuration as quantlib's
fake-quantised graph (BatchNorm folded), every grid the switchable model's own, then ``ptq.deploy``'s exact and
integer models (and the integer ONNX).

The grids: DoReFa weights at k bits are odd multiples of ``1 / (2^k - 1)`` (k + 1 signed bits; at 1 bit, +-1 times
mean |w|), times the folded BatchNorm's ``|gamma| / sigma`` per output channel; DoReFa activations at k bits are
``i / (2^k - 1)`` on [0, 1], PACT's ``i alpha / (2^k - 1)``. LSQ weights at k bits are integers in
``[-2^(k-1), 2^(k-1) - 1]`` (+-1 at 1 bit: 2 signed bits) times the learned step, LSQ activations ``i step``. The
network input, which the switchable model reads in float, is quantised to 8 bits (calibrated). Full-precision
(32-bit) layers have no integer form and are refused.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
import torch.fx as fx
from torch import nn

from quantlib import ptq
from quantlib.calibration import calibrate
from quantlib.editors.canonicalise import canonicalise
from quantlib.fake_quantisation import quantize
from quantlib.mixed_precision.configurations import switchable_layers
from quantlib.mixed_precision.layers import (
    FULL_PRECISION,
    SwitchableActivation,
    SwitchableBatchNorm,
    SwitchableResidual,
    SwitchableWeights,
)
from quantlib.modules.qlinear import QConv2d, QLinear
from quantlib.preflight import GENERIC, preflight, raise_refusals
from quantlib.quantised_layers import respec_bits
from quantlib.scale_ties import harmonise_scales
from quantlib.true_quantisation import IntegerFlow

SPEC = {"weights": {"qrange": {"bitwidth": 8, "signed": True}, "qop": "round", "granularity": "per-outchannel_weights"},
        "relu": {"qrange": {"bitwidth": 8, "signed": False}, "qop": "round"},
        "activations": {"qrange": {"bitwidth": 8, "signed": True}, "qop": "round"}}


def fake_quantised(model: nn.Module, example_input: torch.Tensor, calibration: Iterable) -> fx.GraphModule:
    """The switchable ``model`` at its current configuration as a calibrated quantlib fake-quantised graph whose
    grids are the model's (the module doc)."""
    layers = switchable_layers(model)
    full = [name for name, m in layers.items() if m.bits == FULL_PRECISION]
    if full:
        raise ValueError(f"Layers {full} are at 32 bits (full precision), which has no integer form; export a "
                         f"configuration with every layer at 1..16 bits.")
    plain, grids = _plain_model(model)
    gm = calibrate(quantize(plain, example_input, SPEC), calibration)
    modules = dict(gm.named_modules())
    for name, (bits, grid) in grids.items():
        quantiser = modules[name]
        if isinstance(quantiser, (QConv2d, QLinear)):  # grid: the largest level per channel; BatchNorm is folded in
            grid = quantiser.weight.detach().abs().flatten(1).amax(dim=1) / grid
        shape = quantiser.scale.shape  # as calibrated: per channel for weights
        respec_bits(quantiser, bits)
        quantiser.set_scale(grid.reshape(shape).to(quantiser.scale.dtype))
        quantiser.is_quantised = True
    return harmonise_scales(gm)


def check_exportable(float_model: nn.Module, example_input: torch.Tensor) -> None:
    """UnsupportedOpError listing every construct of ``float_model`` that has no integer form (before training)."""
    raise_refusals(GENERIC.target, preflight(canonicalise(float_model, example_input), GENERIC))


def deploy_configuration(model: nn.Module, example_input: torch.Tensor, calibration: Iterable) -> IntegerFlow:
    """``fake_quantised`` then ``ptq.deploy``: the exact and integer models of the current configuration."""
    return ptq.deploy(fake_quantised(model, example_input, calibration), example_input[:1])


def _plain_model(model: nn.Module) -> tuple[nn.Module, dict[str, tuple[int, torch.Tensor]]]:
    """A float copy computing the current configuration (DoReFa-quantised weights; BatchNorms, to be folded; ReLUs
    for the activation quantisers) and, per layer name, its bits and grid: an activation's step, or a linear op's
    largest integer level per output channel."""
    plain = copy.deepcopy(model).eval()
    grids: dict[str, tuple[int, torch.Tensor]] = {}
    for name, m in list(plain.named_modules()):
        if isinstance(m, SwitchableBatchNorm):
            plain.set_submodule(name, m.current())
        elif isinstance(m, SwitchableActivation):
            grids[name] = (m.bits, m.step())
            plain.set_submodule(name, nn.ReLU())
        elif isinstance(m, SwitchableWeights):
            grids[name] = m.integer_weights()
            plain.set_submodule(name, _float_twin(m, m.quantised_weight().detach()))
        elif isinstance(m, SwitchableResidual):
            raise ValueError(f"Layer {name!r} quantises a residual sum, which the integer path does not take as a "
                             f"separate quantiser; export a model built with residual='float'.")
    return plain, grids


def _float_twin(m: SwitchableWeights, weight: torch.Tensor) -> nn.Module:
    """The float layer of ``m``'s kind and shape with ``weight`` and ``m``'s bias."""
    if isinstance(m, nn.Linear):
        twin = nn.Linear(m.in_features, m.out_features, m.bias is not None)
    else:
        conv = nn.Conv1d if isinstance(m, nn.Conv1d) else nn.Conv2d
        twin = conv(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups,
                    m.bias is not None, m.padding_mode)
    with torch.no_grad():
        twin.weight.copy_(weight)
        if m.bias is not None:
            twin.bias.copy_(m.bias.detach())
    return twin
