"""Bias correction removes the mean output shift that quantised weights cause; a power-of-two PTQ result is exact
through the integer path (fake == exact == integer == onnxruntime)."""

import pytest
import torch

from quantlib import ptq
from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime
from quantlib.modules.qlinear import QConv2d
from quantlib.modules.true_quant import Requant
from quantlib.ptq.bias_correction import channel_mean, correct_bias, linear_op
from quantlib.ptq.capture import capture
from quantlib.quantised_layers import quantised_layers
from quantlib.specs import QuantiserSpec
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact
from quantlib.zoo import ZOO, build


def test_the_corrected_bias_removes_the_measured_mean_shift():
    torch.manual_seed(0)
    spec = QuantiserSpec.from_spec({"qrange": {"bitwidth": 2, "signed": True}, "qop": "round"})
    conv = QConv2d(8, 4, 3, padding=(1, 1), bias=False, spec=spec)
    conv.set_clip_bounds(torch.tensor(-0.2), torch.tensor(0.1))
    conv.is_quantised = True
    x = torch.rand(64, 8, 6, 6) + 0.5  # positive inputs: the weight error shows in the mean
    with torch.no_grad():
        float_mean = channel_mean(linear_op(conv, x, conv.weight))
        before = channel_mean(conv(x)) - float_mean
        shift = correct_bias(conv, x)
        after = channel_mean(conv(x)) - float_mean
    assert before.abs().max() > 0.1
    torch.testing.assert_close(shift, before, rtol=1e-4, atol=1e-5)
    assert after.abs().max() < 1e-5
    torch.testing.assert_close(conv.bias.detach(), -before, rtol=1e-4, atol=1e-5)


def test_in_the_whole_model_each_corrected_layer_has_the_float_layers_mean_on_its_inputs():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(64, 1, 8, 8, generator=g)]
    model = build("digits_cnn", seed=1)
    corrected = ptq.quantize(model, batches, "bias_correction", w_bits=2, a_bits=8, keep_head_stem_8bit=False)
    # the same grids, and the float biases:
    plain = ptq.quantize(model, batches, "rtn", w_bits=2, a_bits=8, keep_head_stem_8bit=False)
    for layer, original in zip(quantised_layers(corrected), quantised_layers(plain), strict=True):
        x, out = capture(corrected, [layer.module], batches)[layer.module]
        bias = torch.zeros(out.shape[1]) if original.module.bias is None else original.module.bias.detach()
        with torch.no_grad():
            float_out = linear_op(layer.module, x, layer.module.weight)
        expected = channel_mean(float_out) + bias
        torch.testing.assert_close(channel_mean(out), expected, rtol=0, atol=1e-4)
        assert (channel_mean(plain.get_submodule(layer.name)(x)) - expected).abs().max() > 1e-3


@pytest.mark.parametrize(("name", "method", "params"), [("digits_cnn", "adaround", {"iters": 50}),
                                                        ("resnet8", "bias_correction", {}),
                                                        ("digits_cnn", "rtn", {"ranges": "mse"})])
def test_a_power_of_two_ptq_result_is_exact_through_the_integer_path(name, method, params, tmp_path):
    g = torch.Generator().manual_seed(2)
    shape = ZOO[name].input_shape
    batches = [torch.randn(32, *shape, generator=g)]
    x = torch.randn(32, *shape, generator=g)
    gm = ptq.quantize(build(name, seed=2), batches, method, w_bits=4, a_bits=4, pow2=True, **params)
    flow = ptq.deploy(gm, x[:1])
    fake_vs_exact = compare_fake_and_exact(flow.fake, flow.exact, x)
    exact_vs_integer = compare_exact_and_integer(flow.exact, flow.integer, x)
    exported = export_integer_onnx(flow.integer, x, tmp_path / "net.onnx")
    integer_vs_ort = verify_onnxruntime(flow.integer, exported, x)
    assert len(fake_vs_exact) >= 4 and len(integer_vs_ort) >= 4
    for comparisons in (fake_vs_exact, exact_vs_integer, integer_vs_ort):
        assert [c for c in comparisons if c.mismatches] == [] and sum(c.elements for c in comparisons) > 1000
    with torch.no_grad():
        assert torch.equal(flow.fake(x).double(), flow.integer(x))


@pytest.mark.parametrize(("name", "method", "bits"), [("digits_cnn", "rtn", 4), ("resnet8", "adaround", 8)])
def test_a_float_scale_ptq_result_deploys_with_multipliers_and_onnxruntime_agrees(name, method, bits, tmp_path):
    g = torch.Generator().manual_seed(3)
    shape = ZOO[name].input_shape
    batches = [torch.randn(32, *shape, generator=g)]
    x = torch.randn(32, *shape, generator=g)
    params = {"iters": 20} if method == "adaround" else {}
    gm = ptq.quantize(build(name, seed=3), batches, method, w_bits=bits, a_bits=bits, **params)
    flow = ptq.deploy(gm, x[:1])
    requants = [m for m in flow.integer.modules() if isinstance(m, Requant)]
    assert any(not bool((torch.frexp(m.mul)[0] == 0.5).all()) for m in requants)  # multipliers, not only shifts
    exact_vs_integer = compare_exact_and_integer(flow.exact, flow.integer, x)
    integer_vs_ort = verify_onnxruntime(flow.integer, export_integer_onnx(flow.integer, x, tmp_path / "n.onnx"), x)
    for comparisons in (exact_vs_integer, integer_vs_ort):
        assert [c for c in comparisons if c.mismatches] == [] and sum(c.elements for c in comparisons) > 10_000
    with torch.no_grad():
        assert torch.equal(flow.exact(x), flow.integer(x))
        assert torch.equal(flow.fake(x).argmax(1), flow.integer(x).argmax(1))
    fake_vs_exact = compare_fake_and_exact(flow.fake, flow.exact, x)
    assert sum(c.mismatches for c in fake_vs_exact) <= 1e-3 * sum(c.elements for c in fake_vs_exact)


