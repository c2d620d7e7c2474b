"""The whole DIANA flow on ResNet-20, the MobileNetV2-style net and the digits CNN, digital-only and mixed: the
hardware-mapped fake-quantised model, the integer model and onnxruntime on the exported twin agree at every layer;
the golden files hold onnxruntime's values; the DORY file passes the conformance checker."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.dory_conformance import check_dory_onnx
from quantlib.backends.diana.dory_interpreter import run_dory
from quantlib.backends.diana.hardware_layers import hardware_layers
from quantlib.backends.diana.layer_kinds import DIANA_LAYER_KINDS
from quantlib.backends.onnx.verify import infer_types, run_onnxruntime
from quantlib.verification import compare_exact_and_integer, compare_fake_and_exact, record
from quantlib.zoo import ZOO, build

pytestmark = pytest.mark.slow

MODELS = ["resnet20", "mobilenetv2", "digits_cnn", "resnet8_mlperf", "ds_cnn"]
N_INPUTS = 16


def read_golden(path: Path) -> tuple[str, np.ndarray]:
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")
    assert all(line.endswith(",") for line in lines[1:])
    return lines[0], np.array([int(line[:-1]) for line in lines[1:]])


@pytest.fixture(scope="module", params=[(m, a) for m in MODELS for a in ("none", "auto")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def flow(request, tmp_path_factory):
    name, analog = request.param
    torch.manual_seed(0)
    x = torch.randn(N_INPUTS, *ZOO[name].input_shape)
    dm = DianaModule.from_fp_model(build(name), analog=analog)
    dm.calibrate([x[:8], x[8:]])
    dm.map_scales([x]).clip_scales_pow2().map_to_hw()
    fake = dm.gm
    exact = dm.exact_model()
    dm.integrize()
    out = tmp_path_factory.mktemp(f"{name}-{analog}") / "export"
    result = dm.export(out, name)
    return name, analog, dm, fake, exact, x, result


def test_cores_follow_the_policy(flow):
    name, analog, dm, *_ = flow
    analog_layers = [k for k, core in dm.cores.items() if core == "analog"]
    if analog == "none":
        assert analog_layers == []
    else:
        # the dense convs reading a ReLU(6)
        expected = {"resnet20": 20, "mobilenetv2": 12, "digits_cnn": 2, "resnet8_mlperf": 8, "ds_cnn": 4}[name]
        assert len(analog_layers) == expected


def test_fake_exact_integer_agree_at_every_layer(flow):
    *_, fake, exact, x, _ = flow
    dm = flow[2]
    fake_vs_exact = compare_fake_and_exact(fake, exact, x)
    exact_vs_integer = compare_exact_and_integer(exact, dm.integer, x)
    assert len(fake_vs_exact) >= 6 and len(exact_vs_integer) >= 6
    assert [c for c in fake_vs_exact if c.mismatches] == []
    assert [c for c in exact_vs_integer if c.mismatches] == []
    with torch.no_grad():
        assert torch.equal(fake(x).double(), exact(x))


def test_twin_equals_integer_model_at_every_hardware_layer(flow):
    name, _, dm, _, _, x, _ = flow
    out = flow[6].out_dir
    twin = onnx.load(str(out / f"{name}_QL_NOANNOTATION.onnx"))
    tensors = [row["twin_tensor"] for row in json.loads((out / f"{name}_report.json").read_text())["hardware_layers"]]
    hw = hardware_layers(dm.integer, DIANA_LAYER_KINDS)
    outputs = [layer.output.name for layer in hw.layers]
    expected = record(dm.integer, x, [hw.input_quantiser.name, *outputs])
    types = infer_types(twin)
    got = run_onnxruntime(twin, expected[hw.input_quantiser.name].numpy().astype(np.float32),
                          {t: types[t] for t in tensors})
    for tensor, node in zip(tensors, outputs, strict=True):
        assert np.array_equal(got[tensor].astype(np.float64), expected[node].numpy()), node
    verified = dm.export(out.parent / "verified", name, verify_on=x)
    assert verified.mismatches == 0 and sum(c.elements for c in verified.comparisons) == sum(
        expected[node].numel() for node in outputs)


def test_export_writes_conforming_dory_file_and_goldens_equal_to_onnxruntime(flow):
    name, _, dm, *_, result = flow
    out = result.out_dir
    hw = hardware_layers(dm.integer, DIANA_LAYER_KINDS)
    assert result.mismatches == 0 and len(result.comparisons) == len(hw.layers)
    assert check_dory_onnx(onnx.load(str(out / f"{name}_QL_DORY.onnx"))) == []
    goldens = {p.name for p in out.glob("out_layer*.txt")}
    assert goldens == {f"out_layer{i}.txt" for i in range(len(hw.layers))}
    sample = dm.reference_input
    values = record(dm.integer, sample, [hw.input_quantiser.name, *(la.output.name for la in hw.layers)])
    header, flat = read_golden(out / "input.txt")
    assert np.array_equal(flat, values[hw.input_quantiser.name][0].permute(1, 2, 0).reshape(-1).numpy())
    last = hw.layers[-1]
    header, flat = read_golden(out / f"out_layer{last.index}.txt")
    assert last.name in header
    assert np.array_equal(flat, values[last.output.name].reshape(-1).numpy())
    config = json.loads((out / "config.json").read_text())
    assert config["onnx_file"] == f"{name}_QL_DORY.onnx" and config["input_bits"] == 8 and config["input_signed"]
    input_quantiser = dm.gm.get_submodule(hw.input_quantiser.target)
    assert config["input_scale"] == input_quantiser.scale.item() and config["input_scale"] < 1
    report = json.loads((out / f"{name}_report.json").read_text())
    assert [row["layer"] for row in report["layers"]] == [la.name for la in hw.layers]


def test_the_dory_file_itself_means_its_goldens_at_every_hardware_layer(flow):
    """The DORY file, read by the Quantlab conventions (custom attributes stripped, residual Adds and ADCs expanded)
    and run in onnxruntime on input.txt, computes out_layer{i}.txt for every i."""
    name, _, dm, *_, result = flow
    out = result.out_dir
    dory = onnx.load(str(out / f"{name}_QL_DORY.onnx"))
    layers = json.loads((out / f"{name}_report.json").read_text())["hardware_layers"]
    config = json.loads((out / "config.json").read_text())
    _, flat = read_golden(out / "input.txt")
    c, h, w = [d.dim_value for d in dory.graph.input[0].type.tensor_type.shape.dim][1:]
    x = flat.reshape(h, w, c).transpose(2, 0, 1)[None]
    values = run_dory(dory, x, config["input_signed"], [row["dory_tensor"] for row in layers])
    for row in layers:
        _, golden = read_golden(out / row["golden"])
        got = values[row["dory_tensor"]][0]
        assert np.array_equal(got.transpose(1, 2, 0).reshape(-1), golden), row["name"]
    assert len(result.dory_comparisons) == len(layers) and sum(c.mismatches for c in result.dory_comparisons) == 0
