"""Per-layer overrides in ``quantlib.quantize`` and every PTQ method: which layers a key selects, the bits and
granularity each layer gets, a layer kept in float, a layer rounded by another PTQ method, and every bad override
refused with the layer names before any calibration."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import quantlib
from quantlib import ptq
from quantlib.errors import UnsupportedOpError
from quantlib.layer_overrides import LayerOverride, resolve_overrides
from quantlib.modules.qlinear import QConv2d
from quantlib.quantised_layers import quantised_layers
from quantlib.zoo import build

RESNET8_LAYERS = ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer2.0.conv1", "layer2.0.conv2",
                  "layer2.0.shortcut.0", "layer3.0.conv1", "layer3.0.conv2", "layer3.0.shortcut.0", "linear"]


def digits_batches(n: int = 2) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.rand(32, 1, 8, 8, generator=g) for _ in range(n)]


def test_keys_select_by_type_then_pattern_then_name():
    model = build("resnet8")
    resolved = resolve_overrides(model, {"layer2.0.conv1": {"w_bits": 6}, nn.Conv2d: {"w_bits": 3, "a_bits": 5},
                                         "layer2.*": {"w_bits": 4, "per_channel": False}})
    assert sorted(resolved) == sorted(RESNET8_LAYERS[:-1])
    assert resolved["conv1"] == LayerOverride(w_bits=3, a_bits=5)
    assert resolved["layer2.0.shortcut.0"] == LayerOverride(w_bits=4, a_bits=5, per_channel=False)
    assert resolved["layer2.0.conv1"] == LayerOverride(w_bits=6, a_bits=5, per_channel=False)


@pytest.mark.parametrize("overrides, message", [
    ({"layer9.*": {"w_bits": 4}}, "Override 'layer9.*' selects no layer; the Conv2d / Linear layers are ['conv1', "),
    ({"linear": {"bits": 4}}, "Override 'linear': ['bits'] is not allowed; give a dict of ['w_bits', 'a_bits', "),
    ({"linear": {"w_bits": 1}}, "Override 'linear': w_bits=1 must be an integer from 2 to 8."),
    ({nn.Linear: {"keep_float": "yes"}}, "Override Linear: keep_float='yes' must be True or False."),
    ({3: {"w_bits": 4}}, "Override key 3 must be a module name, an fnmatch pattern or a module type."),
])
def test_bad_overrides_are_refused(overrides, message):
    with pytest.raises(ValueError) as error:
        resolve_overrides(build("resnet8"), overrides)
    assert message in str(error.value)


def test_quantize_gives_each_layer_its_bits_and_granularity():
    spec = {"weights": {"qrange": {"bitwidth": 8, "signed": True}}}
    gm = quantlib.quantize(build("resnet8"), torch.randn(1, 3, 32, 32), spec,
                           overrides={nn.Linear: {"w_bits": 4}, "layer3.*": {"per_channel": True},
                                      "layer3.0.conv2": {"a_bits": 3}, "layer2.0.conv2": {"keep_float": True}})
    quantlib.calibrate(gm, [torch.randn(8, 3, 32, 32)])
    layers = {layer.name: layer for layer in quantised_layers(gm)}
    assert sorted(layers) == sorted(set(RESNET8_LAYERS) - {"layer2.0.conv2"})
    assert type(gm.get_submodule("layer2.0.conv2")) is nn.Conv2d
    assert {name: layer.module.spec.qrange.bits for name, layer in layers.items()} == \
        {name: 4 if name == "linear" else 8 for name in layers}
    assert [name for name, layer in layers.items() if layer.module.spec.granularity.dims == (0,)] == \
        ["layer3.0.conv1", "layer3.0.conv2", "layer3.0.shortcut.0"]
    assert layers["layer3.0.conv2"].input_quantiser.spec.qrange.bits == 3
    assert layers["layer3.0.conv1"].input_quantiser.spec.qrange.bits == 8
    assert layers["layer3.0.conv2"].module.scale.numel() == 64


def test_layers_sharing_an_input_must_agree_on_its_bits():
    with pytest.raises(ValueError) as error:
        quantlib.quantize(build("resnet8"), torch.randn(1, 3, 32, 32),
                          overrides={"layer2.0.conv1": {"a_bits": 4}, "layer2.0.shortcut.0": {"a_bits": 6}})
    assert ("Overrides of layers 'layer2.0.conv1' (a_bits=4) and 'layer2.0.shortcut.0' (a_bits=6) disagree, but both "
            "read the quantiser 'layer1.0.add.output_quantiser'") in str(error.value)


def test_quantize_refuses_a_ptq_method():
    with pytest.raises(ValueError, match=r"Overrides of \['linear'\] name a PTQ method"):
        quantlib.quantize(build("resnet8"), torch.randn(1, 3, 32, 32), overrides={"linear": {"method": "rtn"}})


def test_ptq_override_wins_over_the_8bit_head_and_stem():
    gm = ptq.quantize(build("digits_cnn"), digits_batches(), "rtn", w_bits=4, a_bits=4,
                      overrides={"classifier": {"w_bits": 3, "a_bits": 6}})
    bits = {layer.name: (layer.module.spec.qrange.bits, layer.input_quantiser.spec.qrange.bits)
            for layer in quantised_layers(gm)}
    assert bits == {"features.0": (8, 8), "features.3": (4, 4), "features.7": (4, 4), "classifier": (3, 6)}


def test_a_layer_rounded_by_another_method():
    model = build("digits_cnn")
    gm = ptq.quantize(model, digits_batches(), "adaround", iters=200, overrides={"features.3": {"method": "rtn"}})
    layers = {layer.name: layer.module for layer in quantised_layers(gm)}
    folded = quantlib.canonicalise(model, digits_batches()[0][:1])
    rtn_layer = layers["features.3"]
    assert torch.equal(rtn_layer.weight, folded.get_submodule("features.3").weight)  # left to round to nearest
    for name in ("features.0", "features.7", "classifier"):  # AdaRound wrote its hard rounding into the weights
        module = layers[name]
        scale = module.scale.detach().reshape(-1, *[1] * (module.weight.dim() - 1))
        steps = module.weight.detach() / scale
        assert torch.allclose(steps, steps.round(), atol=1e-4)
        assert not torch.equal(module.weight, folded.get_submodule(name).weight)


def test_a_layer_kept_in_float_is_evaluated_float_and_refused_by_the_integer_path():
    model = build("digits_cnn")
    batches = digits_batches()
    gm = ptq.quantize(model, batches, "bias_correction", pow2=True, overrides={"features.3": {"keep_float": True}})
    assert type(gm.get_submodule("features.3")) is nn.Conv2d
    assert [layer.name for layer in quantised_layers(gm)] == ["features.0", "features.7", "classifier"]
    assert isinstance(gm.get_submodule("features.7"), QConv2d)
    with pytest.raises(UnsupportedOpError, match=r"layers kept in float \['features.3'\] \(override keep_float\)"):
        ptq.deploy(gm, batches[0])


def test_an_unknown_method_override_fails_before_any_work():
    with pytest.raises(ValueError, match="Override 'features.3': method 'adarund' is not a PTQ method; available: "):
        ptq.quantize(build("digits_cnn"), iter(()), "rtn", overrides={"features.3": {"method": "adarund"}})


def test_float_mode_is_the_float_model_after_every_method_has_run():
    from quantlib.ptq.capture import float_mode

    model = build("digits_cnn")
    x = digits_batches()
    gm = ptq.quantize(model, x, "bias_correction", overrides={"features.7": {"method": "adaround"}})
    folded = quantlib.canonicalise(model, x[0][:1])
    with torch.no_grad():
        reference = folded(x[0])
        with float_mode(gm):
            assert torch.allclose(gm(x[0]), reference, rtol=0, atol=1e-5)
        assert (gm(x[0]) - reference).abs().max() > 1e-3  # outside float mode: rounded weights, corrected biases
    assert not torch.equal(gm.get_submodule("features.7").weight, folded.get_submodule("features.7").weight)


def test_an_override_method_with_its_own_parameters():
    model = build("digits_cnn")
    few = ptq.get_method("adaround", iters=20)
    rtn = ptq.get_method("rtn")
    gm = few.quantize(model, digits_batches(), ptq.PTQOptions(overrides={"features.3": {"method": rtn},
                                                                         "features.7": {"method": "adaround"}}))
    assert sorted(few.traces) == ["classifier", "features.0", "features.7"]  # 'adaround' by name joins the method
    assert all(len(trace.reconstruction) == 20 for trace in few.traces.values())
    folded = quantlib.canonicalise(model, digits_batches()[0][:1])
    assert torch.equal(gm.get_submodule("features.3").weight, folded.get_submodule("features.3").weight)
    with pytest.raises(ValueError, match="method=3 must be a PTQ method name or a method from quantlib.ptq.get_method"):
        ptq.quantize(model, digits_batches(), "rtn", overrides={"features.3": {"method": 3}})


class OutOfOrder(nn.Module):
    """Layers declared in another order than they run: 'a.x', then 'b', then 'a.y'."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.ModuleDict({"x": nn.Linear(8, 8), "y": nn.Linear(8, 4)})
        self.b = nn.Linear(8, 8)

    def forward(self, x):
        return self.a["y"](torch.relu(self.b(torch.relu(self.a["x"](x)))))


def test_the_8bit_head_and_stem_are_the_first_and_last_layers_to_run():
    gm = ptq.quantize(OutOfOrder(), [torch.randn(16, 8)], "rtn", w_bits=2, a_bits=4)
    assert {layer.name: layer.module.spec.qrange.bits for layer in quantised_layers(gm)} == \
        {"a.x": 8, "b": 2, "a.y": 8}


def test_an_exact_name_undoes_a_patterns_keep_float_and_float_layers_take_no_bits():
    gm = quantlib.quantize(build("resnet8"), torch.randn(1, 3, 32, 32),
                           overrides={"layer2.*": {"keep_float": True}, "layer2.0.conv1": {"keep_float": False}})
    assert isinstance(gm.get_submodule("layer2.0.conv1"), QConv2d)
    assert type(gm.get_submodule("layer2.0.conv2")) is nn.Conv2d
    with pytest.raises(ValueError, match="Layer 'linear' is kept in float by its overrides, which also give it "
                                         "\\['a_bits'\\]"):
        resolve_overrides(build("resnet8"), {nn.Linear: {"keep_float": True}, "linear": {"a_bits": 4}})


def test_bit_allocation_leaves_a_layer_overridden_to_one_scale_on_aciqs_clip():
    method = ptq.get_method("aciq", bit_allocation=True)
    gm = method.quantize(build("digits_cnn"), digits_batches(), ptq.PTQOptions(
        w_bits=4, keep_head_stem_8bit=False, overrides={"features.3": {"per_channel": False}}))
    assert "features.3" not in method.levels and "features.7" in method.levels
    assert gm.get_submodule("features.3").scale.numel() == 1
