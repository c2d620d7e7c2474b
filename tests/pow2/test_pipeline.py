"""The power-of-two pipeline on the digits: every scale in the report is the 2^-k its texts say and the model holds;
the report's accuracies are those measured; weight-only QAT leaves every activation float and the weight grids where
they were; the final model is integer-exact down to onnxruntime; the AIMET encodings hold the quantisers' values."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import onnx
import pytest
import torch
from torch.utils.data import DataLoader

from quantlib.backends.onnx.verify import run_onnxruntime
from quantlib.data.sources import data_source
from quantlib.data.validation_split import hold_out
from quantlib.modules.qactivations import QReLU
from quantlib.pow2 import Pow2Model, aimet_encodings, load_config, run, verify_deployment, write_outputs
from quantlib.pow2.pipeline import fake_quantised
from quantlib.pow2.report import power_of_two_text
from quantlib.pow2.tensors import activation_quantisers, layer_tensors, weight_quantisers
from quantlib.training import TrainConfig, accuracy, criterion_loss, fit
from quantlib.zoo import ARCHITECTURES, digits_cnn

FIELDS = ["quantization_type", "pipeline_steps", "config", "final_quantization_details", "initial_accuracy",
          "ptq_accuracy", "qat_best_accuracy", "final_accuracy", "total_improvement"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> str:
    """A float digits_cnn trained 8 epochs, as a state-dict file (every run below starts from it)."""
    torch.manual_seed(0)
    model = digits_cnn()
    fit(model, data_source("digits", 64).train, TrainConfig(epochs=8, lr=3e-3, device="cpu", seed=0,
                                                            progress=False))
    path = tmp_path_factory.mktemp("float") / "digits_cnn.pt"
    torch.save(model.state_dict(), path)
    return str(path)


def config(weights: str, epochs: int = 2, **quantization) -> dict:
    return {"model": {"weights": weights}, "quantization": quantization,
            "training": {"epochs": epochs, "device": "cpu", "seed": 0, "progress": False}}


@pytest.fixture(scope="module")
def w8(weights):
    return run(config(weights))


@pytest.fixture(scope="module")
def w4_per_channel(weights):
    return run(config(weights, weight={"bitwidth": 4}, per_channel=True, scale_rounding="ceil"))


def exponent(detail_text: str) -> int:
    return int(re.fullmatch(r"2\^\((-?\d+)\)", detail_text)[1])


def shift(hardware_op: str) -> int:
    """The k of scale 2^k that 'x >> 9' (k = -9) or 'x << 3' (k = 3) applies."""
    match = re.fullmatch(r"x (>>|<<) (\d+)", hardware_op)
    return -int(match[2]) if match[1] == ">>" else int(match[2])


def test_power_of_two_texts():
    assert power_of_two_text(2.0 ** -9) == ("2^(-9)", "x >> 9")
    assert power_of_two_text(8.0) == ("2^(3)", "x << 3")
    assert power_of_two_text(1.0) == ("2^(0)", "x >> 0")
    with pytest.raises(ValueError, match="0.3 is not an exact power of two"):
        power_of_two_text(0.3)


@pytest.mark.parametrize("name", ["w8", "w4_per_channel"])
def test_every_scale_in_the_report_is_two_to_the_k_its_texts_name_and_the_models(name, request):
    result = request.getfixturevalue(name)
    details = result.report["final_quantization_details"]
    tensors = {t.key: t for t in layer_tensors(result.model.gm)}
    assert set(details) == set(tensors) and len(details) == 16  # 4 layers x weight, bias, input, output
    for key, detail in details.items():
        scales, texts, ops = (detail[f] if isinstance(detail[f], list) else [detail[f]]
                              for f in ("scale", "power_of_2", "hardware_op"))
        for scale, text, op in zip(scales, texts, ops, strict=True):
            assert scale == 2.0 ** exponent(text) == 2.0 ** shift(op), key
        t = tensors[key]
        held = (t.layer.bias_scale if t.kind == "bias" else t.quantiser.scale).detach().reshape(-1).tolist()
        assert scales == held if len(scales) > 1 else set(held) == set(scales), key
        bits = {"weight": result.config.weight.bitwidth, "bias": 32, "input": 8, "output": 8}[t.kind]
        assert detail["bitwidth"] == bits, key
    if name == "w4_per_channel":
        assert isinstance(details["features.3.weight"]["scale"], list)
        assert len(details["features.3.weight"]["scale"]) == 32


def test_the_reports_fields_and_accuracies_are_those_measured(w8, weights):
    report = w8.report
    assert list(report) == FIELDS
    assert report["quantization_type"] == "PTQ -> Weight-Only QAT -> Final PTQ Pipeline"
    assert report["pipeline_steps"] == ["Step 1: PTQ for weight/bias initialization",
                                        "Step 2: Weight-only QAT training",
                                        "Step 3: Final PTQ for input/output quantization"]
    assert report["config"]["bias"] == {"bitwidth": 32, "symmetric": True, "power_of_2": True}
    assert report["initial_accuracy"] == accuracy(w8.float_model, w8.evaluation)
    assert report["final_accuracy"] == accuracy(w8.model, w8.evaluation)
    assert report["total_improvement"] == report["final_accuracy"] - report["initial_accuracy"]
    assert len(w8.evaluation) == 2 and sum(len(y) for _, y in w8.evaluation) == 359  # the whole test set
    assert json.loads(json.dumps(report)) == report
    untrained = run(config(weights, epochs=0), final_ptq=False)
    assert untrained.report["pipeline_steps"] == ["Step 1: PTQ for weight/bias initialization"]
    assert untrained.report["ptq_accuracy"] == accuracy(untrained.model, untrained.evaluation) \
        == untrained.report["qat_best_accuracy"] == untrained.report["final_accuracy"]
    assert untrained.report["ptq_accuracy"] == report["ptq_accuracy"]  # the same step 1 on the same weights


def after_step_one(weights: str, mapping: dict) -> tuple[Pow2Model, DataLoader, DataLoader]:
    """The float model of ``weights`` quantised as ``mapping`` says, after step 1 (4 calibration batches), with the
    training batches and a validation split held out of them."""
    cfg = load_config(mapping)
    data = data_source("digits", 64)
    train, validation = hold_out(data.train, 0.1)
    x = next(iter(data.test))[0]
    float_model = digits_cnn()
    float_model.load_state_dict(torch.load(weights, weights_only=True))
    model = Pow2Model(fake_quantised(float_model.eval(), cfg, x[:1]), cfg, x[:1])
    return model.ptq(data.calibration_batches(4)), train, validation


def test_weight_only_qat_leaves_activations_float_and_the_weight_grids_fixed(weights):
    # 3 bits: PTQ loses, QAT wins back
    model, train, validation = after_step_one(weights, config(weights, epochs=3, weight={"bitwidth": 3}))
    scales = [q.scale.clone() for q in weight_quantisers(model.gm)]
    before = [q.weight.detach().clone() for q in weight_quantisers(model.gm)]
    model.qat(train, validation, criterion_loss("CrossEntropyLoss"))
    activations = activation_quantisers(model.gm)
    assert len(activations) == 5 and not any(q.is_quantised for q in activations)
    assert [n.target for n in model.gm.graph.nodes if n.op == "call_module"
            and model.gm.get_submodule(n.target) in activations] == ["x_quantiser", "features.2", "features.5",
                                                                     "features.9", "classifier_quantiser"]
    probe = torch.randn(64) * 3
    relus = [q for q in activations if isinstance(q, QReLU)]
    assert len(relus) == 3 and all(torch.equal(q(probe), torch.relu(probe)) for q in relus)  # float ReLUs
    assert all(torch.equal(q(probe), probe) for q in activations if q not in relus)  # float: the identity
    after = weight_quantisers(model.gm)
    assert all(q.is_quantised for q in after)
    assert all(torch.equal(q.scale, s) for q, s in zip(after, scales, strict=True))  # same power-of-two grids
    assert any(not torch.equal(q.weight, w) for q, w in zip(after, before, strict=True))  # but trained
    result = model.qat_result
    assert len(result.history.eval_accuracy) == 3 and result.best_accuracy == accuracy(model, validation)
    assert result.best_accuracy >= max(result.history.eval_accuracy)  # the PTQ weights (epoch 0) compete too
    assert result.best_epoch >= 1 and result.best_accuracy == result.history.eval_accuracy[result.best_epoch - 1]


def test_qat_keeps_the_ptq_weights_when_no_epoch_beats_them(weights):
    model, train, validation = after_step_one(weights, {**config(weights, epochs=2), "training": {
        "epochs": 2, "learning_rate": 0.5, "device": "cpu", "seed": 0, "progress": False}})
    ptq_weights = [q.weight.detach().clone() for q in weight_quantisers(model.gm)]
    ptq_accuracy = accuracy(model, validation)
    model.qat(train, validation, criterion_loss("CrossEntropyLoss"))  # a learning rate of 0.5 wrecks the weights
    assert max(model.qat_result.history.eval_accuracy) < ptq_accuracy
    assert (model.qat_result.best_epoch, model.qat_result.best_accuracy) == (0, ptq_accuracy)
    assert all(torch.equal(q.weight, w) for q, w in zip(weight_quantisers(model.gm), ptq_weights, strict=True))


def test_without_the_final_ptq_the_run_stops_after_the_qat_float_activations(weights, tmp_path):
    result = run(config(weights), final_ptq=False)
    assert result.report["quantization_type"] == "PTQ -> Weight-Only QAT Pipeline"
    assert len(result.report["pipeline_steps"]) == 2 and result.flow is None
    assert not any(q.is_quantised for q in activation_quantisers(result.model.gm))
    assert sorted({key.rsplit(".", 1)[1] for key in result.report["final_quantization_details"]}) == ["bias",
                                                                                                       "weight"]
    assert result.report["final_accuracy"] == result.report["qat_best_accuracy"] == accuracy(result.model,
                                                                                               result.evaluation)
    with pytest.raises(ValueError, match="stopped after the QAT"):
        verify_deployment(result, result.evaluation[0][0])
    assert sorted(write_outputs(result, tmp_path)) == ["encodings", "report"]


@pytest.mark.parametrize("name", ["w8", "w4_per_channel"])
def test_the_final_model_is_integer_exact_down_to_onnxruntime(name, request, tmp_path):
    w8 = request.getfixturevalue(name)
    x = w8.evaluation[0][0]
    assert verify_deployment(w8, x) == {"fake_vs_integer_mismatches": 0, "onnx_mismatches": 0,
                                        "onnx_values": 1867264}
    paths = write_outputs(w8, tmp_path)
    with torch.no_grad():
        integer_logits = w8.flow.integer(x)
        fake_logits = w8.model(x)
    ort_logits = run_onnxruntime(onnx.load(paths["onnx"]), x.numpy())["output_0"]
    np.testing.assert_array_equal(ort_logits, integer_logits.numpy())
    assert torch.equal(fake_logits.argmax(1), integer_logits.argmax(1))
    scale = w8.model.gm.get_submodule("classifier_quantiser").scale
    assert torch.equal(torch.round(fake_logits / scale), torch.round(integer_logits / scale))


@pytest.mark.parametrize("name", ["w8", "w4_per_channel"])
def test_the_aimet_encodings_hold_the_quantisers_values(name, request, tmp_path):
    result = request.getfixturevalue(name)
    encodings = json.loads(write_outputs(result, tmp_path)["encodings"].read_text())
    assert list(encodings) == ["version", "activation_encodings", "param_encodings", "excluded_layers",
                               "quantizer_args"]
    assert encodings["version"] == "1.0.0" and encodings["excluded_layers"] == []
    bits = result.config.weight.bitwidth
    assert encodings["quantizer_args"] == {"activation_bitwidth": 8, "param_bitwidth": bits, "dtype": "int",
                                           "is_symmetric": True, "per_channel_quantization": name != "w8",
                                           "quant_scheme": "post_training_tf"}
    gm = result.model.gm
    assert sorted(encodings["param_encodings"]) == ["classifier.weight", "features.0.weight", "features.3.weight",
                                                    "features.7.weight"]
    for key, slices in encodings["param_encodings"].items():
        layer = gm.get_submodule(key.removesuffix(".weight"))
        scales = layer.scale.detach().reshape(-1).tolist()
        assert [e["scale"] for e in slices] == scales
        for e in slices:
            assert (e["bitwidth"], e["dtype"], e["is_symmetric"], e["offset"]) == (bits, "int", "True",
                                                                                  -2 ** (bits - 1))
        lows, highs = (b.detach().reshape(-1).expand(len(slices)).tolist() for b in (layer.lower, layer.clip_hi))
        assert [(e["min"], e["max"]) for e in slices] == list(zip(lows, highs, strict=True))  # the grid's ends
    activations = encodings["activation_encodings"]
    assert sorted(activations) == ["classifier", "features.0", "features.2", "features.5", "features.9"]
    assert list(activations["features.0"]) == ["input"] and list(activations["classifier"]) == ["output"]
    owners = {"features.0": ("input", "x_quantiser"), "classifier": ("output", "classifier_quantiser"),
              **{relu: ("output", relu) for relu in ("features.2", "features.5", "features.9")}}
    for owner, (role, quantiser_name) in owners.items():
        q = gm.get_submodule(quantiser_name)
        e = activations[owner][role]["0"]
        assert (e["scale"], e["offset"], e["bitwidth"]) == (q.scale.item(), int(q.zero.item()), 8)
        assert (e["min"], e["max"]) == (q.lower.item(), q.clip_hi.item())
        assert e["is_symmetric"] == "True"  # fixed grids: signed about zero, or a ReLU's unsigned from zero
    assert activations["features.2"]["output"]["0"]["min"] == 0.0  # a ReLU's unsigned grid


def test_scale_rounding_ceil_keeps_the_weight_range_and_round_is_the_nearest_power(weights):
    grids = {}
    for rounding in ("round", "ceil"):
        result = run(config(weights, epochs=0, weight={"bitwidth": 4}, scale_rounding=rounding), final_ptq=False)
        grids[rounding] = [(q.weight.detach(), q.scale.item()) for q in weight_quantisers(result.model.gm)]
    for (w, ceil), (_, nearest) in zip(grids["ceil"], grids["round"], strict=True):
        assert w.abs().max() / ceil <= 7.5  # every weight within the 4-bit grid's reach: nothing clipped
        assert nearest in (ceil, ceil / 2)
    assert any(nearest != ceil for (_, ceil), (_, nearest) in zip(grids["ceil"], grids["round"], strict=True))


def test_float_scales_are_reported_as_multiplications(weights):
    result = run(config(weights, epochs=0, **{kind: {"power_of_2": False} for kind in ("weight", "input",
                                                                                       "output", "bias")}))
    detail = result.report["final_quantization_details"]["features.0.weight"]
    assert detail["power_of_2"] is None and detail["hardware_op"] == f"x * {detail['scale']!r}"
    assert not result.model.shift_only


def test_a_bias_too_wide_for_its_accumulator_grid_is_clipped_with_a_warning(weights, caplog):
    with caplog.at_level(logging.WARNING, logger="quantlib.pow2.stages"):
        result = run(config(weights, epochs=0, bias={"bitwidth": 8}))
    warned = [r.getMessage() for r in caplog.records if "accumulator grid" in r.getMessage()]
    assert warned and all("give quantization.bias more bits" in m for m in warned)
    for layer in weight_quantisers(result.model.gm):
        assert (layer.bias.detach().abs() <= 127 * layer.bias_scale).all()
    assert verify_deployment(result, result.evaluation[0][0])["fake_vs_integer_mismatches"] == 0


class ResidualDigits(torch.nn.Module):
    """A stem and one residual block on the digits: the add's operands and sum are quantised tensors too."""

    def __init__(self, num_classes: int = 10, width: int = 8) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(1, width, 3, padding=1, bias=False),
                                        torch.nn.BatchNorm2d(width), torch.nn.ReLU())
        self.conv1, self.bn1 = torch.nn.Conv2d(width, width, 3, padding=1, bias=False), torch.nn.BatchNorm2d(width)
        self.conv2, self.bn2 = torch.nn.Conv2d(width, width, 3, padding=1, bias=False), torch.nn.BatchNorm2d(width)
        self.pool, self.classifier = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def test_a_residual_models_adds_are_reported_encoded_and_integer_exact(monkeypatch):
    monkeypatch.setattr(ARCHITECTURES, "_items", dict(ARCHITECTURES._items))  # registered for this test only
    ARCHITECTURES.register("residual_digits", ResidualDigits)
    result = run({"model": {"name": "residual_digits", "pretrain": {"epochs": 4}},
                  "quantization": {"weight": {"bitwidth": 6}, "input": {"bitwidth": 7}, "output": {"bitwidth": 6}},
                  "training": {"epochs": 1, "device": "cpu", "seed": 0, "progress": False}})
    details = result.report["final_quantization_details"]
    assert [k for k in details if not k.endswith(("weight", "bias"))] == [
        "stem.0.input", "stem.0.output", "conv1.input", "conv1.output", "conv2.input", "conv2.output",
        "classifier.input", "classifier.output", "add.input.0", "add.input.1", "add.output"]
    gm = result.model.gm
    add = gm.get_submodule("add")
    assert [details[f"add.input.{i}"]["scale"] for i in (0, 1)] == [q.scale.item() for q in add.input_quantisers]
    assert details["add.output"]["scale"] == add.output_quantiser.scale.item() == details["classifier.input"]["scale"]
    assert details["conv2.output"] == details["add.input.1"]  # conv2's output is the add's second operand
    assert {k: d["bitwidth"] for k, d in details.items() if k.startswith("stem.0")} == {
        "stem.0.weight": 6, "stem.0.bias": 32, "stem.0.input": 7, "stem.0.output": 6}
    assert all(d["power_of_2"] is not None for d in details.values())
    encodings = aimet_encodings(gm, result.config)["activation_encodings"]
    assert sorted(encodings["add"]["input"]) == ["0", "1"] and list(encodings["add"]["output"]) == ["0"]
    assert encodings["add"]["output"]["0"]["scale"] == add.output_quantiser.scale.item()
    assert "conv2" not in encodings  # each quantiser once, on the add that owns it
    assert verify_deployment(result, result.evaluation[0][0])["fake_vs_integer_mismatches"] == 0
    assert verify_deployment(result, result.evaluation[0][0])["onnx_mismatches"] == 0


def test_each_tensor_type_has_its_own_bits_and_symmetry(weights):
    result = run(config(weights, epochs=0, weight={"bitwidth": 5}, input={"bitwidth": 8, "symmetric": False},
                        output={"bitwidth": 6, "symmetric": False}, bias={"bitwidth": 24}))
    details = result.report["final_quantization_details"]
    kinds = {kind: {d["bitwidth"] for k, d in details.items() if k.endswith(kind)} for kind in
             ("weight", "bias", "input", "output")}
    assert kinds == {"weight": {5}, "bias": {24}, "input": {8, 6}, "output": {6}}  # inputs of later layers: outputs
    assert details["features.0.input"]["bitwidth"] == 8 and details["features.3.input"]["bitwidth"] == 6
    gm = result.model.gm
    assert gm.get_submodule("x_quantiser").spec.qrange.offset is None  # a learned zero point
    assert gm.get_submodule("features.2").spec.qrange.offset == 0  # a ReLU stays unsigned
    encodings = aimet_encodings(gm, result.config)["activation_encodings"]
    assert encodings["features.0"]["input"]["0"]["is_symmetric"] == "False"
    assert verify_deployment(result, result.evaluation[0][0])["fake_vs_integer_mismatches"] == 0


def test_weights_with_a_learned_zero_point_are_integer_exact(weights):
    result = run(config(weights, epochs=1, weight={"bitwidth": 6, "symmetric": False}))
    layer = result.model.gm.get_submodule("features.3")
    assert layer.spec.qrange.offset is None  # a learned zero point, not a symmetric grid
    encodings = aimet_encodings(result.model.gm, result.config)["param_encodings"]["features.3.weight"]
    assert encodings[0]["is_symmetric"] == "False" and encodings[0]["offset"] == int(layer.zero.item())
    assert verify_deployment(result, result.evaluation[0][0]) == {"fake_vs_integer_mismatches": 0,
                                                                  "onnx_mismatches": 0, "onnx_values": 1867264}
