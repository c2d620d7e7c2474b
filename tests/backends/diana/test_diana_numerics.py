"""The numbers of docs/diana-numerics.md in the exported files: digital biases in the conv, adds on one scale with
nothing after them, ADCs never finer than input x weight, pools of any window, MLPs, and what degenerate calibration
data leaves behind."""

import logging

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.hardware_layers import hardware_layers
from quantlib.backends.diana.layer_kinds import DIANA_LAYER_KINDS

torch.manual_seed(0)


def _flow(model, x, analog="none", **export):
    dm = DianaModule.from_fp_model(model.eval(), x[:1], analog=analog)
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2().map_to_hw([x]).integrize()
    return dm


def _export(dm, tmp_path, x, name="net"):
    result = dm.export(tmp_path / name, name, verify_on=x)
    layers = hardware_layers(dm.integer, DIANA_LAYER_KINDS).layers
    assert result.mismatches == 0 and len(result.dory_comparisons) == len(layers)
    return result, onnx.load(str(result.out_dir / f"{name}_QL_DORY.onnx"))


def _attributes(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _consumers(model, tensor):
    return [n for n in model.graph.node if tensor in n.input]


class Residual(nn.Module):
    def __init__(self, relu_after: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=True), nn.ReLU())
        self.conv = nn.Conv2d(16, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.relu_after = relu_after
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        y = self.bn(self.conv(x)) + x
        y = torch.relu(y) if self.relu_after else y
        return self.head(y.mean((2, 3)))


@pytest.mark.parametrize("relu_after", [True, False])
def test_digital_bias_is_the_conv_input_and_the_add_is_doryadder_with_nothing_after(tmp_path, relu_after):
    x = torch.randn(16, 3, 7, 7)
    dm = _flow(Residual(relu_after), x)
    _, dory = _export(dm, tmp_path, x)
    inits = {t.name: numpy_helper.to_array(t) for t in dory.graph.initializer}
    convs = [n for n in dory.graph.node if n.op_type == "Conv"]
    assert len(convs) == 3 and all(len(c.input) == 3 and "bias" in c.input[2] for c in convs)
    integer = dict(dm.integer.named_modules())
    assert np.array_equal(inits[convs[0].input[2]], integer["stem.0"].bias.numpy().astype(np.float32))
    for conv in convs:  # the requant after a digital layer neither multiplies nor offsets
        mul = _consumers(dory, conv.output[0])[0]
        add = _consumers(dory, mul.output[0])[0]
        assert (inits[mul.input[1]] == 1).all() and (inits[add.input[1]] == 0).all()
        assert inits[mul.input[1]].shape == (16 if conv is not convs[-1] else 10, 1, 1)
    [residual] = [n for n in dory.graph.node if n.op_type == "Add" and all(i not in inits for i in n.input)]
    a = _attributes(residual)
    assert (a["in1_rq"], a["in2_rq"], a["out_rq"], a["out_mul"], a["out_add"]) == (0, 0, 1, 1, 0)
    assert a["out_shift"] >= 0 and a["out_signed"] == int(not relu_after)
    assert a["out_n_levels"] == (128 if relu_after else 256) and a["in2_n_levels"] == 128  # the stem's 7-bit ReLU
    assert [n.op_type for n in _consumers(dory, residual.output[0])] == ["GlobalAveragePool"]
    clips = [n for n in dory.graph.node if n.op_type == "Clip"]
    assert {_attributes(c)["out_bits"] for c in clips} == {8}
    pool = next(n for n in dory.graph.node if n.op_type == "GlobalAveragePool")
    mul = _consumers(dory, pool.output[0])[0]
    assert inits[mul.input[1]].shape == () and inits[mul.input[1]] == 1  # a scalar requant: DORY's RequantPooling


def test_an_average_pool_of_any_window_floors_the_exact_mean(tmp_path):
    """A 5x3 window (15), padded, and a global pool over 7x7 (49): neither is a power of two."""
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d((5, 3), (5, 3), padding=(2, 1)),
                          nn.Conv2d(8, 8, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    x = torch.randn(16, 1, 31, 19)  # padded: 35 x 21, pooled to 7 x 7
    dm = _flow(model, x, analog="auto")
    result, _ = _export(dm, tmp_path, x)
    pools = [layer for layer in hardware_layers(dm.integer, DIANA_LAYER_KINDS).layers if layer.kind.name == "pool"]
    assert [dm.integer.get_submodule(p.op.target).kernel_size for p in pools] == [(5, 3), None]
    dory = onnx.load(str(result.out_dir / "net_QL_DORY.onnx"))
    [pool] = [n for n in dory.graph.node if n.op_type == "AveragePool"]
    assert _attributes(pool)["count_include_pad"] == 1 and _attributes(pool)["pads"] == [2, 1, 2, 1]
    values = {c.layer: c for c in result.comparisons}
    assert all(values[p.name].elements > 0 and values[p.name].mismatches == 0 for p in pools)


def test_a_sparse_relu_before_an_analog_conv_gives_an_adc_no_finer_than_input_times_weight(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 1, bias=False),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16, 4))
    with torch.no_grad():
        model[0].bias.fill_(-2.0)  # most of the first ReLU's outputs are zero
    x = torch.randn(16, 1, 4, 4)
    dm = _flow(model, x, analog="auto")
    assert dm.cores["2"] == "analog"
    conv = dm.gm.get_submodule("2")
    relu = dm.gm.get_submodule("1")
    assert conv.adc.scale.item() >= relu.scale.item() * conv.scale.item()
    rows = {r.layer: r for r in dm.report()}
    assert [f for f in rows["2"].findings if f["severity"] == "error"] == []
    _export(dm, tmp_path, x)


def test_a_quantiser_that_saw_only_zeros_says_so_and_the_report_flags_its_layer(caplog):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(64, 2))
    with torch.no_grad():
        model[2].weight.fill_(-1.0)
        model[2].bias.fill_(-1.0)  # the second ReLU only ever sees negative values: its output is all zeros
    x = torch.rand(8, 1, 4, 4)
    with caplog.at_level(logging.WARNING):
        dm = _flow(model, x)
    assert "Quantiser '3' : " not in caplog.text
    assert "Quantiser '3': 1 of its 1 slices saw only zeros" in caplog.text and "in the 512 calibration values" \
        in caplog.text
    rows = {r.layer: r for r in dm.report()}
    [finding] = [f for f in rows["2"].findings if f["rule"] == "degenerate-calibration"]
    assert "['3'] saw only zeros in calibration" in finding["message"] and "degenerate calibration data" in \
        finding["message"]
    assert not any(f["rule"] == "degenerate-calibration" for f in rows["0"].findings)


def test_an_mlp_on_two_dimensional_inputs_exports_as_convolutions_over_its_whole_input(tmp_path):
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    x = torch.randn(16, 20)
    for analog in ("none", "auto"):
        dm = _flow(model, x, analog)
        _, dory = _export(dm, tmp_path / analog, x)
        assert [d.dim_value for d in dory.graph.input[0].type.tensor_type.shape.dim] == [1, 20, 1, 1]
        assert [_attributes(n)["kernel_shape"] for n in dory.graph.node if n.op_type == "Conv"] == [[1, 1]] * 3


def test_a_ceil_mode_max_pool_keeps_ceil_mode_in_the_dory_file(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 2))
    x = torch.randn(8, 1, 5, 5)
    _, dory = _export(_flow(model, x), tmp_path, x)
    [pool] = [n for n in dory.graph.node if n.op_type == "MaxPool"]
    assert _attributes(pool)["ceil_mode"] == 1


def test_nested_adds_are_two_hardware_adds(tmp_path):
    class Nested(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.conv = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            x = torch.relu(self.stem(x))
            y = self.conv(x)
            y += x
            y = torch.relu(torch.add(y, x))
            return y

    x = torch.randn(8, 3, 6, 6)
    dm = _flow(Nested(), x, analog="auto")
    kinds = [la.kind.name for la in hardware_layers(dm.integer, DIANA_LAYER_KINDS).layers]
    assert kinds == ["conv", "analog_conv", "add", "add"]
    _export(dm, tmp_path, x)


def test_an_add_whose_input_is_off_its_scale_is_a_named_hardware_error_and_still_exports_exactly(tmp_path):
    x = torch.randn(16, 3, 6, 6)
    dm = DianaModule.from_fp_model(Residual(), x[:1])
    dm.calibrate([x]).map_scales([x]).clip_scales_pow2()
    stem_relu = dm.gm.get_submodule("stem.1")
    with torch.no_grad():
        stem_relu.set_scale(stem_relu.scale.detach() / 2)  # the add now reads it on another scale
    add = dm.gm.get_submodule("add")
    add.input_quantisers[1].set_scale(add.input_quantisers[0].scale.detach().clone())
    dm.map_to_hw()
    rows = {r.layer: r for r in dm.report()}
    [finding] = [f for f in rows["add"].findings if f["rule"] == "add-input-scale"]
    assert finding["severity"] == "error" and "input 1 must be requantised first" in finding["message"]
    dm.integrize()
    result, dory = _export(dm, tmp_path, x)  # the DORY file carries the input requant (in2_rq = 1): still exact
    assert any("[add-input-scale]" in e for e in result.errors)
    inits = {t.name for t in dory.graph.initializer}
    [residual] = [n for n in dory.graph.node if n.op_type == "Add" and all(i not in inits for i in n.input)]
    a = _attributes(residual)
    assert (a["in1_rq"], a["in2_rq"], a["in2_mul"], a["in2_shift"]) == (0, 1, 1, 1)  # half the scale: >> 1
