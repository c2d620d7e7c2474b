"""Networks with analog convolutions: exact fake-quant vs integer vs onnxruntime agree at every layer, and a
bias-free power-of-two fake-quantised network already equals its exact twin."""

import dataclasses

import pytest
import torch
from torch import nn

from quantlib.backends.diana.analog_conv import TERNARY_SPEC, AnalogConv2d
from quantlib.backends.diana.target import DIANA
from quantlib.backends.diana.true_analog_conv import TrueAnalogConv2d
from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime
from quantlib.calibration import calibrate
from quantlib.editors.base import ComposedEditor, FixedPoint, Rewriter
from quantlib.editors.canonicalise import canonicalise
from quantlib.editors.fake2true import integerise, to_exact
from quantlib.editors.float2fake import (
    ACTIVATION_FUSER,
    AddTreeHarmoniser,
    Interposer,
    ModuleFilter,
    ModuleWiseConverter,
)
from quantlib.errors import UnsupportedOpError
from quantlib.fake_quantisation import QuantisationSpec
from quantlib.scales import clip_scales_pow2, quantise_biases
from quantlib.targets import INTEGER_ONNX
from quantlib.verification import compare, compare_exact_and_integer, record


def mixed_net(in_channels: int = 300) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, in_channels, 3, padding=1), nn.ReLU(),        # digital
        nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(),       # analog: 3 tiles of 128 channels
        nn.Conv2d(16, 16, 1), nn.ReLU(),                            # analog: one tile
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))  # digital


def fake_quantise(model: nn.Module, x: torch.Tensor, analog: tuple[str, ...]) -> torch.fx.GraphModule:
    spec = QuantisationSpec()
    editors = [
        ModuleWiseConverter([(ModuleFilter(names=analog), TERNARY_SPEC, AnalogConv2d.from_fp_module),
                             (ModuleFilter(types=(nn.Conv2d, nn.Linear)), spec.weights),
                             (ModuleFilter(types=(nn.ReLU,)), spec.relu)]),
        AddTreeHarmoniser(spec.activations, spec.activations), Interposer(spec.activations),
        FixedPoint(Rewriter(ACTIVATION_FUSER)),
    ]
    fake = ComposedEditor(editors)(canonicalise(model, x))
    return clip_scales_pow2(calibrate(fake, [x]))


def test_mixed_analog_digital_network_is_integer_exact(tmp_path):
    x = torch.rand(8, 3, 8, 8)
    fake = fake_quantise(mixed_net(), x, ("2", "4"))
    assert [type(fake.get_submodule(t)).__name__ for t in ("0", "2", "4")] == ["QConv2d", "AnalogConv2d",
                                                                                "AnalogConv2d"]
    assert len(fake.get_submodule("2").tiles()) == 3
    exact = to_exact(fake, x[:2], DIANA.exact_editors())
    assert isinstance(exact.get_submodule("2"), TrueAnalogConv2d)
    integer = integerise(exact)
    exact_vs_int = compare_exact_and_integer(exact, integer, x)
    assert [c.layer for c in exact_vs_int if c.layer in ("_2", "_4")] == ["_2", "_4"]
    assert [c for c in exact_vs_int if c.mismatches] == []
    exported = export_integer_onnx(integer, x[:2], tmp_path / "mixed.onnx", DIANA.emitters)
    int_vs_ort = verify_onnxruntime(integer, exported, x)
    assert [c for c in int_vs_ort if c.mismatches] == []
    bias = integer.get_submodule("2").bias.abs().max()
    adc = record(integer, x, ["_2"])["_2"]
    assert adc.abs().max() <= 3 * 32 + bias  # three tiles of 6-bit ADC codes, plus the bias


def test_pow2_fake_analog_network_equals_its_exact_twin():
    x = torch.rand(8, 3, 8, 8)
    fake = quantise_biases(fake_quantise(mixed_net(), x, ("2", "4")), x[:2], DIANA.scale_rules)
    exact = to_exact(fake, x[:2], DIANA.exact_editors())
    names = ["_2", "_4"]
    fake_values, exact_values = record(fake, x, names), record(exact, x, names)
    for name in names:
        assert compare(name, fake_values[name], exact_values[name]).mismatches == 0


def test_the_generic_target_names_an_analog_layer_it_cannot_integerise_whatever_was_imported():
    x = torch.rand(4, 3, 8, 8)
    fake = fake_quantise(mixed_net(16), x, ("2",))  # DIANA's modules are imported: they register nothing
    with pytest.raises(UnsupportedOpError, match=r"Node '_2' \(AnalogConv2d\) reads quantised values but the target "
                                                 r"has no scale rule for it"):
        to_exact(fake, x[:2])
    scales_only = dataclasses.replace(INTEGER_ONNX, scale_rules=DIANA.scale_rules)  # no analog integeriser
    with pytest.raises(UnsupportedOpError, match=r"No editor turned these fake-quantised modules into integer ops: "
                                                 r"_2 \(AnalogConv2d\)"):
        to_exact(fake, x[:2], scales_only.exact_editors())
