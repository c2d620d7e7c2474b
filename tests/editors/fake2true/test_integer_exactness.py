"""Exact fake-quantised vs integer GraphModule vs onnxruntime: 0 mismatching elements at every layer."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime
from quantlib.data import digits_loaders
from quantlib.errors import UnsupportedOpError
from quantlib.modules.true_quant import Requant, ScaleTunnel, TrueAvgPool2d
from quantlib.training import train_epochs
from quantlib.true_quantisation import pow2_integer_flow
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact, record
from quantlib.zoo import ZOO, build, digits_cnn

INTEGER_ZOO = sorted(ZOO)


def _check_exact(flow, x, tmp_path, name, fake_too=True):
    """exact == integer == onnxruntime at every layer; and, where the float32 fake model's accumulators stay below
    2**24 (``fake_too``), fake == exact at every quantiser."""
    if fake_too:
        fake_vs_exact = compare_fake_and_exact(flow.fake, flow.exact, x)
        assert fake_vs_exact and [c for c in fake_vs_exact if c.mismatches] == []
    exact_vs_int = compare_exact_and_integer(flow.exact, flow.integer, x)
    exported = export_integer_onnx(flow.integer, x, tmp_path / f"{name}.onnx")
    int_vs_ort = verify_onnxruntime(flow.integer, exported, x)
    n_outputs = sum(c.layer.startswith("output_") for c in int_vs_ort)
    assert len(exact_vs_int) >= 3 and n_outputs >= 1 and len(int_vs_ort) == len(exact_vs_int) + n_outputs
    assert [c for c in exact_vs_int if c.mismatches] == []
    assert [c for c in int_vs_ort if c.mismatches] == []
    assert sum(c.elements for c in exact_vs_int) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", INTEGER_ZOO)
def test_zoo_models_are_integer_exact_at_every_layer_on_64_inputs(name, tmp_path):
    g = torch.Generator().manual_seed(7)
    model = build(name, seed=7)
    calibration = [torch.randn(16, *ZOO[name].input_shape, generator=g) for _ in range(2)]
    x = torch.randn(64, *ZOO[name].input_shape, generator=g)
    _check_exact(pow2_integer_flow(model, x[:2], calibration), x, tmp_path, name)


def test_digits_trained_model_is_integer_exact(tmp_path):
    torch.manual_seed(0)
    train, test = digits_loaders(seed=0)
    model = train_epochs(digits_cnn(), train, epochs=5, lr=3e-3)
    x = next(iter(test))[0][:64]
    _check_exact(pow2_integer_flow(model, x[:2], [b for b, _ in list(train)[:4]]), x, tmp_path, "digits")


ROUNDING_SPEC = {"weights": {"qrange": {"bitwidth": 4, "signed": True}, "qop": "round",
                             "granularity": "per-outchannel_weights"},
                 "relu": {"qrange": {"bitwidth": 4, "signed": False}, "qop": "round"},
                 "activations": {"qrange": {"bitwidth": 8, "signed": True}, "qop": "lsq"}}


@pytest.mark.parametrize("name", ["digits_cnn", "resnet8"])
def test_rounding_quantisers_are_integer_exact(name, tmp_path):
    """Quantisers that round half up (round, lsq) become requantisations that add half a unit before flooring."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, *ZOO[name].input_shape, generator=g)
    flow = pow2_integer_flow(build(name, seed=3), x[:1], [x], ROUNDING_SPEC)
    requants = [m for m in flow.integer.modules() if isinstance(m, Requant)]
    shifted = [m for m in requants if m.shift > 0]
    assert shifted and all(float(m.add) == 2.0 ** (m.shift - 1) for m in shifted)
    assert float(requants[0].add) == 0.5 and requants[0].shift == 0  # the input's quantiser reads real values
    _check_exact(flow, x, tmp_path, name)


def test_every_intermediate_of_the_integer_model_holds_integers():
    model = build("resnet20", seed=3)
    x = torch.randn(8, 3, 32, 32)
    flow = pow2_integer_flow(model, x[:2], [x])
    modules = dict(flow.integer.named_modules())
    nodes = [n for n in flow.integer.graph.nodes if n.op == "call_module"
             and not isinstance(modules[n.target], (ScaleTunnel, TrueAvgPool2d))]  # a mean, floored by its requant
    values = record(flow.integer, x, [n.name for n in nodes])
    assert len(values) == len(nodes) > 60
    for name, v in values.items():
        assert torch.equal(v, v.round()), name
    tunnels = [n for n in flow.integer.graph.nodes if n.op == "call_module"
               and isinstance(modules[n.target], ScaleTunnel)]
    assert len(tunnels) == 2  # one after the input, one before the output


def test_accumulator_beyond_2_pow_24_stays_exact(tmp_path):
    """A 3x3 conv over 512 channels with saturated inputs and weights: |acc| > 2**24, and odd, so float32 cannot
    hold it; the integer model, the exact model and onnxruntime must still agree."""
    conv = nn.Conv2d(512, 4, 3, padding=1, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    with torch.no_grad():
        conv.weight.fill_(-1.0)
        conv.weight[1].fill_(1.0)
        conv.weight[0, 0].fill_(-63 / 64)   # integer weight -63 (scale 1/64)
    x = torch.full((2, 512, 4, 4), 2.0)     # input scale 1/32: integers 64
    x[:, 0] = 63 / 32                       # integers 63 on channel 0
    flow = pow2_integer_flow(model, x, [x, -x])
    acc_node = next(n.name for n in flow.integer.graph.nodes if n.target == "0")
    acc = record(flow.integer, -x, [acc_node])[acc_node]
    centre = acc[0, 0, 1, 1]
    assert centre == 9 * (63 * 63 + 511 * 64 * 64) and centre > 2 ** 24 and centre % 2 == 1
    ints = torch.full((1, 512, 4, 4), -64.0)
    ints[:, 0] = -63.0
    float32_acc = nn.functional.conv2d(ints, flow.integer.get_submodule("0").weight.float(), padding=1)
    assert float32_acc[0, 0, 1, 1].double() != centre  # float32 alone would have rounded it
    _check_exact(flow, -x, tmp_path, "wide", fake_too=False)  # float32 cannot hold this accumulator


class LeakyAndSigmoid(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x):
        x = F.leaky_relu(self.conv(x), 0.1)
        return torch.sigmoid(x)


def test_ops_without_an_integer_form_are_refused_before_quantisation_with_line_and_fix():
    x = torch.randn(2, 1, 4, 4)
    with pytest.raises(UnsupportedOpError) as error:
        pow2_integer_flow(LeakyAndSigmoid(), x, [x])
    text = str(error.value)
    assert text.startswith("2 construct(s) of this model have no form on quantlib's integer path:")
    assert (f"leaky_relu (nn.LeakyReLU) at {__file__}:{LeakyAndSigmoid.forward.__code__.co_firstlineno + 1}: "
            f"x = F.leaky_relu(self.conv(x), 0.1)") in text
    assert "has no LeakyReLU (its negative slope is a multiplier). Fix: use nn.ReLU." in text
    assert f"<top level> (torch.sigmoid) at {__file__}:" in text and "Fix: use nn.ReLU6, or drop the gate" in text


def test_float_scales_integerise_exactly_with_multipliers_and_the_fake_model_agrees():
    from quantlib.calibration import calibrate
    from quantlib.editors.fake2true import integerise, to_exact
    from quantlib.fake_quantisation import quantize
    from quantlib.scales import quantise_biases

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 1, 8, 8, generator=g)
    fake = calibrate(quantize(build("digits_cnn"), x[:2]), [torch.randn(64, 1, 8, 8, generator=g)])
    quantise_biases(fake, x[:1])
    exact = to_exact(fake, x[:1])
    integer = integerise(exact)
    assert [n.name for n in integer.graph.nodes if isinstance(getattr(integer, n.target, None), ScaleTunnel)] \
        == ["tunnel", "tunnel_6"]  # every other tunnel cancelled: eps * (1 / eps) is 1 to float64 rounding
    assert [c.layer for c in compare_exact_and_integer(exact, integer, x) if c.mismatches] == []
    assert [c.layer for c in compare_fake_and_exact(fake, exact, x) if c.mismatches] == []
    with torch.no_grad():
        assert torch.equal(exact(x), integer(x))  # the same integers times the same float64 scale


def test_requants_use_shifts_only_with_pow2_scales():
    x = torch.randn(4, 3, 32, 32)
    flow = pow2_integer_flow(build("resnet20"), x, [x])
    requants = [m for m in flow.integer.modules() if isinstance(m, Requant)]
    assert requants and all(bool(((m.mul.log2() % 1) == 0).all()) for m in requants)
    assert all(0 <= m.shift <= 31 for m in requants)


def test_onnx_export_is_deterministic_standard_and_atomic(tmp_path):
    import onnx

    x = torch.randn(4, 1, 8, 8)
    flow = pow2_integer_flow(build("digits_cnn"), x, [x])
    a, b = tmp_path / "first" / "model.onnx", tmp_path / "second" / "model.onnx"
    export_integer_onnx(flow.integer, x, a)
    export_integer_onnx(flow.integer, x, b)
    assert a.read_bytes() == b.read_bytes()
    model = onnx.load(a)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 13 and model.opset_import[0].domain == ""
    ops = {n.op_type for n in model.graph.node}
    assert ops <= {"Cast", "Mul", "Add", "Div", "Floor", "Clip", "ConvInteger", "MatMulInteger", "ReduceSum",
                   "MaxPool", "Reshape", "Identity"}
    assert "ConvInteger" in ops and "MatMulInteger" in ops
    assert [p.name for p in a.parent.iterdir()] == ["model.onnx"]  # no temporary file left behind


def test_failed_export_leaves_existing_file_untouched(tmp_path):
    from quantlib.errors import ExportError
    from quantlib.fake_quantisation import QuantisationSpec

    target = tmp_path / "model.onnx"
    target.write_bytes(b"previous export")
    x = torch.randn(4, 1, 8, 8)
    wide = QuantisationSpec.from_spec({"weights": {"qrange": {"bitwidth": 12, "signed": True}}})
    flow = pow2_integer_flow(build("digits_cnn"), x, [x], wide)
    with pytest.raises(ExportError, match=r"Layer 'features_0' has weights in \[-\d+, \d+\] in output channel \d+, "
                                          r"more than 256 levels"):
        export_integer_onnx(flow.integer, x, target)
    assert target.read_bytes() == b"previous export"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_onnxruntime_output_matches_exact_model_output():
    from quantlib.backends.onnx import integer_onnx, run_onnxruntime

    x = torch.randn(16, 3, 32, 32)
    flow = pow2_integer_flow(build("vgg11"), x[:2], [x])
    got = run_onnxruntime(integer_onnx(flow.integer, x[:2]).model, x.numpy())["output_0"]
    with torch.no_grad():
        np.testing.assert_array_equal(got, flow.exact(x).numpy())


def _exact_everywhere(model, x, tmp_path, name):
    flow = pow2_integer_flow(model, x[:2], [x])
    _check_exact(flow, x, tmp_path, name)
    return flow


def test_relu6_keeps_its_ceiling_through_pow2_and_integers(tmp_path):
    torch.manual_seed(1)  # weights that overflowed onnxruntime's u8 x s8 int16 pair sums
    conv = nn.Conv2d(1, 1, 1, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
    model = nn.Sequential(conv, nn.ReLU6(), nn.Flatten(), nn.Linear(16, 2, bias=False))
    x = torch.linspace(-1, 10, 64).reshape(4, 1, 4, 4)
    flow = _exact_everywhere(model, x, tmp_path, "relu6")
    relu = flow.fake.get_submodule("1")
    assert relu.clip_hi.item() > 6.0  # the power-of-two scale rounded the range up beyond the ceiling
    values = record(flow.fake, x, ["_1"])["_1"]
    assert values.max().item() == 6.0
    requant = flow.integer.get_submodule("1")
    assert requant.hi == int(6.0 / relu.scale.item())


def test_signed_relu_quantiser_still_clips_at_zero(tmp_path):
    from quantlib.fake_quantisation import QuantisationSpec

    signed = QuantisationSpec.from_spec({"relu": {"qrange": {"bitwidth": 8, "signed": True}, "qop": "pact"}})
    model = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2, bias=False))
    x = torch.randn(8, 1, 4, 4)
    flow = pow2_integer_flow(model, x[:2], [x], signed)
    assert flow.integer.get_submodule("1").lo == 0
    with torch.no_grad():
        assert torch.equal(flow.fake(x).double(), flow.exact(x))
    _check_exact(flow, x, tmp_path, "signed_relu")


def test_value_returned_and_read_by_a_later_layer(tmp_path):
    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            y = torch.relu(self.a(x))
            return y, self.b(y)

    x = torch.randn(4, 1, 6, 6)
    flow = _exact_everywhere(TwoOutputs(), x, tmp_path, "two_outputs")
    with torch.no_grad():
        features, logits = flow.integer(x)
    assert features.shape == (4, 4, 6, 6) and logits.shape == (4, 4, 6, 6)


def test_model_ending_in_an_average_pool(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    _exact_everywhere(model, torch.randn(4, 1, 8, 8), tmp_path, "gap_output")


def test_dilated_max_pool_exports_exactly(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, stride=1, dilation=2),
                          nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    _exact_everywhere(model, torch.randn(4, 1, 8, 8), tmp_path, "dilated")


@pytest.mark.parametrize("layer, message", [
    (nn.Conv2d(1, 2, 3, padding=1, padding_mode="reflect"),
     r"- 0 \(nn.Conv2d\) at <no source line>\n      padding_mode='reflect': integer convolutions pad with zeros. Fix: "
     r"use padding_mode='zeros'."),
    (nn.AvgPool2d(3, ceil_mode=True), r"- 1 \(nn.AvgPool2d\) at <no source line>\n      quantlib's integer path has no "
     r"average over windows of different sizes. Fix: use nn.AdaptiveAvgPool2d\(1\)"),
])
def test_layers_without_an_integer_form_are_refused(layer, message):
    model = nn.Sequential(nn.Conv2d(1, 2, 1), layer, nn.Flatten(), nn.LazyLinear(2)) \
        if isinstance(layer, nn.AvgPool2d) else nn.Sequential(layer, nn.Flatten(), nn.Linear(2 * 8 * 8, 2))
    x = torch.randn(4, 1, 8, 8)
    model(x)  # materialise the lazy layer
    with pytest.raises(UnsupportedOpError, match=message):
        pow2_integer_flow(model, x[:2], [x])

