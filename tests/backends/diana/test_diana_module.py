"""DianaModule: stage order, state dicts at every stage, core choice (policy, descriptors, describe), per-rule
hardware findings, analog BatchNorm numerics, the HTVM twin and the all-or-nothing output folder."""

import io
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from quantlib.backends.diana.analog_batchnorm import AnalogBatchNorm
from quantlib.backends.diana.descriptors import DescriptorError, load_descriptors
from quantlib.backends.diana.diana_module import DianaModule, Stage, StageError
from quantlib.backends.diana.report import format_report
from quantlib.backends.onnx.verify import infer_types, run_onnxruntime
from quantlib.errors import ExportError, HardwareRuleError, QuantlibError, UnsupportedOpError
from quantlib.verification import record
from quantlib.zoo import build

X = torch.randn(24, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def digits(analog: str = "auto", **kwargs) -> DianaModule:
    return DianaModule.from_fp_model(build("digits_cnn"), analog=analog, **kwargs)


STEPS = [
    ("calibrate", lambda dm: dm.calibrate([X[:12], X[12:]])),
    ("map_scales", lambda dm: dm.map_scales([X])),
    ("clip_scales_pow2", lambda dm: dm.clip_scales_pow2()),
    ("map_to_hw", lambda dm: dm.map_to_hw()),
    ("integrize", lambda dm: dm.integrize()),
]


def test_a_stage_called_too_early_names_the_stage_to_call_first():
    dm = digits()
    with pytest.raises(StageError, match=r"map_scales\(\) needs stage 'calibrated', but the model is at "
                                         r"'quantised': call calibrate\(batches\) first"):
        dm.map_scales([X])
    with pytest.raises(StageError, match=r"export\(\) needs stage 'integer'.*call calibrate\(batches\) first"):
        dm.export("unused")
    dm.calibrate([X])
    with pytest.raises(StageError, match=r"map_to_hw\(\) needs stage 'pow2'.*call map_scales\(batches\) first"):
        dm.map_to_hw()


def test_a_passed_stage_cannot_be_redone():
    dm = digits()
    dm.calibrate([X]).map_scales([X])
    with pytest.raises(StageError, match=r"calibrate\(\) belongs to stage 'quantised', which this model has passed"):
        dm.calibrate([X])


def test_map_scales_needs_batches_for_the_adcs_of_analog_layers():
    dm = digits().calibrate([X])
    with pytest.raises(StageError, match=r"ADCs of the analog layers \['features.3', 'features.7'\]"):
        dm.map_scales()
    assert digits("none").calibrate([X]).map_scales().stage is Stage.SCALES_MAPPED


def test_map_scales_replaces_relu6_ceilings_by_the_calibrated_clip():
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    dm = DianaModule.from_fp_model(build("mobilenetv2")).calibrate([x])
    relus = [m for m in dm.gm.modules() if type(m).__name__ == "QReLU"]
    assert {m.ceiling for m in relus} == {6.0} and max(m.clip_hi.item() for m in relus) <= 6.0
    bounds = [m.clip_hi.item() for m in relus]
    dm.map_scales()
    assert {m.ceiling for m in relus} == {None}
    ramp = torch.linspace(-1.0, 10.0, 1000).reshape(1, 1, 1, -1)
    with torch.no_grad():
        for relu, bound in zip(relus, bounds, strict=True):
            assert (relu.spec.qrange.max, relu.clip_hi.item()) == (127, bound)
            top = float(relu(ramp).max())  # the clip, within one 7-bit step (floor of clip / scale may lose one)
            assert bound * 126 / 127 - 1e-6 <= top <= bound + 1e-6 and float(relu(ramp).min()) == 0.0


def test_map_scales_gives_7_bit_relus_ternary_weights_and_6_bit_adcs():
    dm = digits().calibrate([X])
    relu_scale = dm.gm.get_submodule("features.2").scale.item()
    dm.map_scales([X])
    relu = dm.gm.get_submodule("features.2")
    assert (relu.spec.qrange.min, relu.spec.qrange.max) == (0, 127)
    assert relu.scale.item() == pytest.approx(relu_scale * 255 / 127)
    analog = dm.gm.get_submodule("features.3")
    w = analog.quantise(analog.weight) / analog.scale
    assert set(w.unique().tolist()) == {-1.0, 0.0, 1.0}
    assert (analog.adc.spec.qrange.min, analog.adc.spec.qrange.max) == (-32, 31)
    assert type(dm.gm.get_submodule("features.0")).__name__ == "QConv2d"  # reads the signed input: digital


@pytest.mark.parametrize("analog", ["none", "auto"])
def test_state_dict_round_trip_at_every_stage(analog):
    dm = digits(analog)
    for step, run in [("from_fp_model", lambda dm: dm), *STEPS]:
        run(dm)
        buffer = io.BytesIO()
        torch.save(dm.state_dict(), buffer)
        buffer.seek(0)
        fresh = digits(analog)
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        assert fresh.stage is dm.stage, step
        with torch.no_grad():
            assert torch.equal(fresh.eval()(X), dm.eval()(X)), step


def test_load_state_dict_refuses_other_cores_and_foreign_dicts():
    dm = digits("auto").calibrate([X])
    with pytest.raises(Exception, match=r"other cores for layers \['features.3', 'features.7'\]"):
        digits("none").load_state_dict(dm.state_dict())
    with pytest.raises(Exception, match="no DianaModule stage"):
        digits("auto").load_state_dict(build("digits_cnn").state_dict())


def test_forward_runs_the_model_of_the_current_stage():
    dm = digits()
    for _, run in STEPS[:4]:
        run(dm)
    with torch.no_grad():
        fake = dm.eval()(X)
        dm.integrize()
        integer = dm(X)
    assert integer.dtype == X.dtype
    assert torch.equal(fake, integer)
    assert not dm(X).requires_grad and dm(X).numpy().shape == (len(X), 10)  # eval mode: a plain tensor
    trained = dm.train()(X)
    assert torch.equal(trained.detach(), integer)
    with pytest.raises(StageError, match=r"^The integer stage computes integers and has no gradients: train the model "
                       r"before integrize\(\)"):
        nn.functional.cross_entropy(trained, torch.arange(len(X)) % 10).backward()


class BrokenNet(nn.Module):
    """Layers that break DIANA's rules: kernel 2, dilation 2, a grouped conv asked to be analog, stride 3."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(4, 8, 3, padding=1)
        self.k2 = nn.Conv2d(8, 8, 2, padding=1)
        self.dilated = nn.Conv2d(8, 8, 3, padding=2, dilation=2)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.strided = nn.Conv2d(8, 8, 3, stride=3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.stem(x))
        x = self.relu(self.k2(x))
        x = self.relu(self.dilated(x))
        x = self.relu(self.grouped(x))
        return self.strided(x)


def rules(dm: DianaModule, layer: str) -> list[tuple[str, str]]:
    return [(f["rule"], f["severity"]) for row in dm.report() if row.layer == layer for f in row.findings]


def test_one_finding_per_broken_rule_naming_layer_and_fix():
    descriptors = {"k2": "ANALOG", "dilated": "ANALOG", "grouped": "ANALOG", "strided": "DIGITAL"}
    dm = DianaModule.from_fp_model(BrokenNet(), torch.randn(1, 4, 12, 12), descriptors=descriptors)
    assert dm.cores == {"stem": "digital", "k2": "digital", "dilated": "digital", "grouped": "digital",
                        "strided": "digital"}
    assert rules(dm, "stem") == []
    assert rules(dm, "k2") == [("kernel-size", "error")]
    assert rules(dm, "dilated") == [("dilation", "error"), ("padding", "error")]  # padding 2 was for dilation 2
    assert rules(dm, "grouped") == [("analog-groups", "warning"), ("digital-groups", "error")]
    assert rules(dm, "strided") == [("stride", "error")]
    [grouped] = [f for row in dm.report() if row.layer == "grouped" for f in row.findings if f["severity"] == "warning"]
    assert grouped["message"].startswith("stays digital: groups=2")
    assert grouped["fix"] == "keep this layer digital, or use groups=1."


def test_ineligible_error_refuses_an_analog_request_with_the_rule():
    with pytest.raises(HardwareRuleError, match=r"1 hardware rule\(s\) of DIANA are broken:\n  - features.0: "
                       r"\[analog-input\] cannot run on the analog core as the descriptors ask: reads 'x'"):
        digits("none", descriptors={"features.0": "ANALOG"}, ineligible="error")


def test_describe_writes_a_template_that_loads_back(tmp_path):
    dm = digits("auto")
    path = dm.describe(tmp_path / "cores.yaml")
    text = path.read_text()
    assert "features.3: ANALOG" in text and "features.0: DIGITAL" in text
    assert "# features.0: [analog-input] stays digital" in text
    assert load_descriptors(path, dm.cores) == dm.cores
    again = DianaModule.from_fp_model(build("digits_cnn"), descriptors=path)
    assert again.cores == dm.cores


def test_descriptor_naming_an_unknown_layer_suggests_the_closest():
    with pytest.raises(DescriptorError, match=r"names layer 'features.33'.*Did you mean 'features.3'"):
        digits("none", descriptors={"features.33": "ANALOG"})


def test_analog_batchnorm_picks_the_largest_p_and_clamps_to_8_bits():
    bn = AnalogBatchNorm(2)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([3.0, -1.0]))
        bn.bias.copy_(torch.tensor([0.5, 2.0]))
        bn.running_mean.copy_(torch.tensor([0.0, 1.0]))
        bn.running_var.copy_(torch.tensor([1.0, 4.0]) - bn.eps)
    bn.input_scale = torch.tensor(0.25)
    mul, add, p = bn.integer_affine()
    # gamma' = 0.25 * [3, -0.5] = [0.75, -0.125]; beta' = [0.5, 2.5]: 2^p * 2.5 < 128 -> p = 5
    assert p == 5
    assert mul.tolist() == [24.0, -4.0] and add.tolist() == [16.0, 80.0]
    acc = torch.tensor([3.0, -7.0]).reshape(1, 2, 1, 1)
    assert bn.eval()(acc * 0.25).reshape(-1).tolist() == [(3 * 24 + 16) / 32, (-7 * -4 + 80) / 32]


def exported(tmp_path, dialect: str):
    dm = digits("auto")
    for _, run in STEPS:
        run(dm)
    return dm, dm.export(tmp_path / dialect, "digits", dialect=dialect)


def test_htvm_twin_takes_the_real_input_and_equals_the_goldens(tmp_path):
    dm, result = exported(tmp_path, "htvm")
    assert result.mismatches == 0
    twin = onnx.load(str(result.out_dir / "digits_QL_NOANNOTATION.onnx"))
    assert twin.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    report = json.loads((result.out_dir / "digits_report.json").read_text())
    assert report["dialect"] == "htvm"
    last = report["hardware_layers"][-1]
    got = run_onnxruntime(twin, X.numpy(), {last["twin_tensor"]: infer_types(twin)[last["twin_tensor"]]})
    with torch.no_grad():
        logits = dm(X).double()
    scale = dm.integer.get_submodule(next(n.target for n in dm.integer.graph.nodes if n.op == "call_module"
                                          and n.name.startswith("tunnel") and n.args[0].op != "placeholder"))
    assert np.array_equal(got[last["twin_tensor"]] * scale.factor.numpy(), logits.numpy())


def test_export_replaces_only_what_an_export_wrote_and_refuses_bad_input_before_writing(tmp_path):
    dm, result = exported(tmp_path, "dory")
    manifest = json.loads((result.out_dir / ".quantlib-export").read_text())
    assert manifest["files"] == sorted(p.name for p in result.out_dir.iterdir() if p.name != ".quantlib-export")
    again = dm.export(result.out_dir, "digits")  # an earlier export, exactly as written: replaced
    assert (again.out_dir / "digits_QL_DORY.onnx").exists()
    notes = result.out_dir / "notes.txt"
    notes.write_text("the user's own")
    with pytest.raises(ExportError, match=r"holds files that no export wrote: \['notes.txt'\]"):
        dm.export(result.out_dir, "digits")
    assert notes.read_text() == "the user's own"
    notes.unlink()
    before = sorted(p.name for p in result.out_dir.iterdir())
    with pytest.raises(ExportError, match="Unknown dialect 'tvm'"):
        dm.export(result.out_dir, "digits", dialect="tvm")
    with pytest.raises(ExportError, match="plain file-name stem"):
        dm.export(result.out_dir, "../digits")
    assert sorted(p.name for p in result.out_dir.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_golden_layers_are_the_fused_hardware_layers_in_order(tmp_path):
    dm, result = exported(tmp_path, "dory")
    report = json.loads((result.out_dir / "digits_report.json").read_text())
    assert [(h["name"], h["kind"]) for h in report["hardware_layers"]] == [
        ("features.0", "conv"), ("features.3", "analog_conv"), ("features.6", "maxpool"),
        ("features.7", "analog_conv"), ("pool", "pool"), ("classifier", "linear")]
    row = next(r for r in report["layers"] if r["layer"] == "features.3")
    assert row["core"] == "analog" and row["bits"] == {"input": 7, "output": 7, "weights": 2, "adc": 6}
    assert 0 <= row["requant"]["shift"] <= 31 and 0 <= row["requant"]["adc_shift"] <= 31
    conv = next(n for n in dm.integer.graph.nodes if n.op == "call_module" and n.target == "features.7")
    [requant] = list(conv.users)
    values = record(dm.integer, dm.reference_input, [requant.name])[requant.name][0]
    lines = (result.out_dir / "out_layer3.txt").read_text().splitlines()
    assert lines[0] == f"# features.7 (shape {list(values.shape)}),"
    assert [int(line[:-1]) for line in lines[1:]] == values.permute(1, 2, 0).reshape(-1).long().tolist()


def test_analog_noise_acts_in_training_only_and_never_reaches_the_integer_model():
    dm = digits()
    for _, run in STEPS[:3]:
        run(dm)
    with pytest.raises(ValueError, match="must be >= 0"):
        dm.set_analog_noise(-0.1)
    dm.set_analog_noise(0.05)
    torch.manual_seed(0)
    noisy_a, noisy_b = dm.train()(X), dm.train()(X)
    assert not torch.equal(noisy_a, noisy_b)
    with torch.no_grad():
        assert torch.equal(dm.eval()(X), dm.eval()(X))
    dm.train().map_to_hw([X])  # the exactness check runs noise-free although the model is in training mode
    assert dm.gm.training
    dm.integrize()
    with torch.no_grad():
        assert torch.equal(dm.eval()(X), dm.gm.eval()(X))


def test_report_table_shows_core_bits_scales_shifts_and_findings():
    dm = digits()
    before = format_report(dm.report()).splitlines()
    assert before[0].split() == ["layer", "kind", "core", "kernel", "stride", "bits", "w/in/out", "scales", "2^k",
                                 "in/w/out", "shift", "findings"]
    assert before[1].split() == ["features.0", "conv", "digital", "3x3", "1x1", "-", "-", "-",
                                 "analog-input,", "channels-multiple-of-4"]
    for _, run in STEPS[:4]:
        run(dm)
    rows = {line.split()[0]: line.split() for line in format_report(dm.report()).splitlines()[1:]}
    analog = next(r for r in dm.report() if r.layer == "features.3")
    k_in, k_w, k_out = analog.scales["input"], analog.scales["weights"], analog.scales["output"]
    ternary = dm.gm.get_submodule("features.3")
    assert 2.0 ** k_w == ternary.scale.item()  # the ternary weight scale, which the integer op folds away
    assert rows["features.3"][:6] == ["features.3", "analog_conv", "analog", "3x3", "1x1", "2/7/7"]
    assert rows["features.3"][6:10] == [f"{k_in}/{k_w}/{k_out}", str(analog.requant["shift"]), "(adc",
                                        f"{analog.requant['adc_shift']})"]
    assert rows["features.6"][1] == "maxpool" and rows["classifier"][5] == "8/7/8"  # reads the pooled 7-bit ReLU


def test_retraining_after_pow2_keeps_every_scale_a_power_of_two():
    dm = digits()
    for _, run in STEPS[:3]:
        run(dm)
    frozen = [p for name, p in dm.named_parameters() if name.endswith(("clip_hi", "clip_lo"))]
    assert frozen and not any(p.requires_grad for p in frozen)
    optimiser = torch.optim.Adam([p for p in dm.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        optimiser.zero_grad()
        nn.functional.cross_entropy(dm.train()(X), torch.arange(len(X)) % 10).backward()
        optimiser.step()
    scales = [m.scale.detach() for m in dm.gm.modules() if hasattr(m, "spec") and m.is_quantised]
    assert all(torch.equal(torch.log2(s), torch.log2(s).round()) for s in scales)
    dm.map_to_hw([X]).integrize()  # the exactness check passes after retraining
    fresh = digits()
    fresh.load_state_dict(dm.state_dict())
    assert not any(p.requires_grad for name, p in fresh.named_parameters() if name.endswith("clip_hi"))


def test_a_state_dict_that_does_not_fit_leaves_the_module_as_it_was():
    dm = digits().calibrate([X]).map_scales([X])
    state = dm.state_dict()
    broken = {**state, "gm.features.3.weight": torch.zeros(1)}
    fresh = digits()
    with pytest.raises(RuntimeError, match="size mismatch for gm.features.3.weight"):
        fresh.load_state_dict(broken)
    assert fresh.stage is Stage.QUANTISED and type(fresh.gm.get_submodule("features.3")).__name__ == "QConv2d"
    fresh.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(X), dm.eval()(X))
    with pytest.raises(Exception, match=r"stage 'pow-2' is not one of \['quantised', 'calibrated'"):
        digits().load_state_dict({**state, "_extra_state": {**state["_extra_state"], "stage": "pow-2"}})


def test_module_names_with_bias_in_them_do_not_confuse_dory(tmp_path):
    model = nn.Sequential()
    model.add_module("debias_stem", nn.Conv2d(1, 8, 3, padding=1))
    model.add_module("relu", nn.ReLU())
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flatten", nn.Flatten())
    model.add_module("bias_head", nn.Linear(8, 10))
    dm = DianaModule.from_fp_model(model)
    for _, run in STEPS:
        run(dm)
    dory = onnx.load(str(dm.export(tmp_path / "out", "net").out_dir / "net_QL_DORY.onnx"))
    assert sorted(t.name for t in dory.graph.initializer) == [
        "layer0_bias", "layer0_requant_add", "layer0_requant_mul", "layer0_weight", "layer1_requant_add",
        "layer1_requant_mul", "layer2_bias", "layer2_requant_add", "layer2_requant_mul", "layer2_weight"]


class FunctionalConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(4, 1, 3, 3))

    def forward(self, x):
        return nn.functional.conv2d(x, self.weight, padding=1)


def test_functional_linear_ops_are_refused_at_once_with_line_and_fix():
    with pytest.raises(UnsupportedOpError) as error:
        DianaModule.from_fp_model(FunctionalConvNet())
    assert (f"<top level> (torch.conv2d) at {__file__}:{FunctionalConvNet.forward.__code__.co_firstlineno + 1}: "
            f"return nn.functional.conv2d(x, self.weight, padding=1)\n      DIANA has no functional convolutions or "
            f"linear ops (their weights are no module's). Fix: use nn.Conv2d / nn.Linear modules.") in str(error.value)


def test_export_folders_and_checkpoints_get_the_umasks_permissions(tmp_path):
    import os

    from quantlib.atomic_files import write_atomically

    dm, _ = exported(tmp_path, "dory")
    old = os.umask(0o027)
    try:
        out = dm.export(tmp_path / "shared", "digits").out_dir
        checkpoint = write_atomically(tmp_path / "model.pt", b"weights")
    finally:
        os.umask(old)
    assert oct(out.stat().st_mode & 0o777) == oct(0o750)
    assert oct((out / "digits_QL_DORY.onnx").stat().st_mode & 0o777) == oct(0o640)
    assert oct(checkpoint.stat().st_mode & 0o777) == oct(0o640)


def test_map_scales_keeps_the_parameters_it_does_not_add_and_param_groups_train_every_one(caplog):
    dm = digits().calibrate([X])
    before = {name: p for name, p in dm.named_parameters()}
    with caplog.at_level("INFO", logger="quantlib.backends.diana.diana_module"):
        dm.map_scales([X])
    after = dict(dm.named_parameters())
    added = sorted(set(after) - set(before))
    assert added == ["gm.features.3.adc.clip_hi", "gm.features.7.adc.clip_hi"]
    assert all(after[name] is p for name, p in before.items())  # the analog convs kept their weights and clips
    assert "map_scales added 2 parameters (gm.features.3.adc.clip_hi, gm.features.7.adc.clip_hi)" in caplog.text
    groups = dm.param_groups()
    assert groups[1]["weight_decay"] == 0.0 and all(p.requires_grad for g in groups for p in g["params"])
    optimiser = torch.optim.SGD(groups, lr=0.1)
    values = {name: p.detach().clone() for name, p in dm.named_parameters()}
    dm.train()
    optimiser.zero_grad()
    nn.functional.cross_entropy(dm(X * 4), torch.arange(len(X)) % 10).backward()
    optimiser.step()
    with_grad = [name for name, p in dm.named_parameters() if p.grad is not None and bool(p.grad.abs().sum() > 0)]
    assert len(with_grad) >= 10
    assert [name for name in with_grad if torch.equal(values[name], dict(dm.named_parameters())[name])] == []


def test_torch_save_of_the_module_says_what_to_save_instead_and_deepcopy_still_works(tmp_path):
    import copy

    dm = digits()
    for _, run in STEPS[:2]:
        run(dm)
    with pytest.raises(QuantlibError, match=r"save torch.save\(dm.state_dict\(\), path\) or a quantlib checkpoint"):
        torch.save(dm, tmp_path / "dm.pt")
    twin = copy.deepcopy(dm)
    assert twin.stage is dm.stage and twin.gm is not dm.gm
    assert torch.equal(twin(X), dm(X))
