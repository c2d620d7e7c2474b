"""The YAML configuration refuses every bad key or value naming the file, the key, the value and what is allowed;
``quantlib train`` trains, validates, writes its results and exports a configuration that onnxruntime computes
exactly as the integer model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from quantlib import mixed_precision as mp
from quantlib.cli import main as quantlib_main
from quantlib.mixed_precision.config import ConfigError, load_config
from quantlib.mixed_precision.export import deploy_configuration
from quantlib.verification import compare_exact_and_integer
from quantlib.zoo import digits_cnn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mixed_precision" / "digits.yaml"


def test_the_example_reads_key_for_key():
    config = load_config(EXAMPLE)
    assert config.method_name == "dorefa" and config.method.bitwidth_options == (2, 4, 8)
    assert (config.joint_quantization_batch_size, config.num_bitwidths) == (2, 8)
    assert config.method.training_method == "joint_quantization" and config.training.epochs == 20
    assert load_config(EXAMPLE, overrides={"epochs": 3}).training.epochs == 3


BAD = [
    (lambda d: d["quantization"].update(enable=False), "key 'quantization.enable' has value False; allowed: true"),
    (lambda d: d["quantization"].update(Conv="Conv2d"), "key 'quantization.Conv' has value 'Conv2d'; allowed: "
                                                        "'QuanConv'"),
    (lambda d: d["quantization"]["dorefa"].update(bitwidth_options=[3, 64]), "bit-width options [3, 64] must be a "
                                                                              "non-empty list of integers from 1 to 16 "
                                                                              "or 32 (full precision); not allowed: "
                                                                              "[64]"),
    (lambda d: d["quantization"]["dorefa"].update(activation_quantization="apot"),
     "key 'quantization.dorefa.activation_quantization' has value 'apot'; allowed: one of ['dorefa', 'pact', "
     "'lsq']"),
    (lambda d: d["quantization"]["dorefa"].update(training_method="joint"),
     "key 'quantization.dorefa.training_method' has value 'joint'; allowed: one of ['joint_quantization', "),
    (lambda d: d["quantization"]["dorefa"].update(switchable_clipping="yes"),
     "key 'quantization.dorefa.switchable_clipping' has value 'yes'; allowed: true or false"),
    (lambda d: d["quantization"]["dorefa"].update(bitwdith_options=[2]),
     "unknown key(s) ['quantization.dorefa.bitwdith_options']; allowed here: "),
    (lambda d: d["quantization"]["joint_quantization"].update(joint_quantization_batch_size=0),
     "key 'quantization.joint_quantization.joint_quantization_batch_size' has value 0; allowed: an integer >= 1"),
    (lambda d: d["quantization"]["dorefa"].update(training_method="vanilla_single_precision_training"),
     "key 'quantization.dorefa.bitwidth_options' has value [2, 4, 8]; allowed: one bit-width for "
     "vanilla_single_precision_training"),
    (lambda d: d["data"].update(dataset="cifar10"), "key 'data.path' has value None; allowed: a "
                                                    "cifar-10-batches-py folder (dataset cifar10 is read from a path)"),
    (lambda d: d["training"].update(lr=-1), "training: lr=-1 is not allowed: lr must be a number > 0"),
    (lambda d: d.update(optimizer={}), "unknown key(s) ['optimizer']; allowed here: ['data', 'model', "),
]


@pytest.mark.parametrize(("edit", "message"), BAD)
def test_bad_keys_and_values_are_refused_naming_file_key_value_and_what_is_allowed(edit, message, edited_yaml):
    path = edited_yaml(EXAMPLE, edit)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_an_unknown_method_block_is_refused_listing_the_blocks(tmp_path):
    with pytest.raises(ConfigError, match=r"key '--quantization-method' has value 'any_precision'; allowed: one of "
                                          r"the method blocks \['dorefa'\]"):
        load_config(EXAMPLE, "any_precision")


def test_mixed_dorefa_weights_and_pact_activations_train_and_export_exactly(tmp_path):
    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [2, 4], activation_quantization="pact", switchable_clipping=True)
    for clip in model.features[2].clips.values():
        clip.data.fill_(0.5)  # below much of the BatchNorm-ed input: PACT's gradient moves it
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    train_jointly(model, x, g)
    assert model.features[2].clips["2"].item() != 0.5 and model.features[2].clips["4"].item() != 0.5  # learned
    config = mp.set_random_bitwidths(model, generator=g)
    model.eval()
    flow = deploy_configuration(model, x, [x])
    assert [c.layer for c in compare_exact_and_integer(flow.exact, flow.integer, x) if c.mismatches] == []
    relu = flow.fake.get_submodule("features.2")  # the deployed grid is the switchable model's: alpha / (2^k - 1)
    k = config["features.2"]
    assert relu.scale.item() == pytest.approx(model.features[2].clips[str(k)].item() / (2 ** k - 1), rel=1e-6)
    with torch.no_grad():
        agree = (model(x).argmax(1) == flow.exact(x).argmax(1)).float().mean().item()
    assert agree >= 0.9  # the 8-bit input and the floored average pool are the only differences


def train_jointly(model: torch.nn.Module, x: torch.Tensor, g: torch.Generator) -> None:
    """Three joint steps over options [2, 4] on ``x`` with random labels from ``g``."""
    optimiser = torch.optim.Adam(model.parameters(), 1e-2)
    module, loss_fn = mp.joint_quantization(model, [2, 4], 2, g)
    for _ in range(3):
        optimiser.zero_grad()
        loss, _ = loss_fn(module.train(), x, torch.randint(0, 10, (32,), generator=g))
        loss.backward()
        optimiser.step()


def test_an_lsq_configuration_deploys_exactly_on_its_learned_steps():
    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [2, 4], weight_quantization="lsq", activation_quantization="lsq")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 1, 8, 8, generator=g)
    train_jointly(model, x, g)
    config = mp.set_random_bitwidths(model, generator=g)
    model.eval()
    flow = deploy_configuration(model, x, [x])
    assert [c.layer for c in compare_exact_and_integer(flow.exact, flow.integer, x) if c.mismatches] == []
    relu, k = flow.fake.get_submodule("features.2"), config["features.2"]
    assert relu.scale.item() == pytest.approx(model.features[2].steps[str(k)].item(), rel=1e-6)
    with torch.no_grad():
        agree = (model(x).argmax(1) == flow.exact(x).argmax(1)).float().mean().item()
    assert agree >= 0.9


def test_eight_bit_dorefa_weights_export_as_two_steps_of_uint8_levels(tmp_path):
    from quantlib.backends.onnx import export_integer_onnx, verify_onnxruntime

    torch.manual_seed(0)
    model = mp.switchable(digits_cnn(), [8]).eval()
    x = torch.randn(16, 1, 8, 8)
    flow = deploy_configuration(model, x, [x])
    weights = flow.integer.get_submodule("features.3").weight
    assert bool((weights % 2 != 0).all()) and weights.abs().max() == 255  # odd levels -255 .. 255: 9 bits
    exported = export_integer_onnx(flow.integer, x, tmp_path / "n.onnx")
    assert "features_3.acc.stepped" in {n.name for n in exported.model.graph.node}  # 2 * uint8 levels + offset
    comparisons = verify_onnxruntime(flow.integer, exported, x)
    assert [c.layer for c in comparisons if c.mismatches] == [] and sum(c.elements for c in comparisons) > 10_000


def test_quantlib_train_trains_validates_writes_and_exports(edited_yaml, tmp_path, capsys):
    out = tmp_path / "out"
    path = edited_yaml(EXAMPLE, lambda d: d["training"].update(epochs=2, device="cpu"))
    code = quantlib_main.main(["train", "--yaml_path", str(path), "--out", str(out), "--export-config", "uniform:4"])
    assert code == 0
    results = json.loads((out / "train_results.json").read_text())
    spread = results["random_bitwidths"]
    accuracies = [c["accuracy"] for c in spread["configurations"]]
    assert len(accuracies) == 8 and spread["accuracy_min"] == min(accuracies) and spread["accuracy_max"] == max(
        accuracies)
    assert len({json.dumps(c["configuration"], sort_keys=True) for c in spread["configurations"]}) == 8
    assert sorted(results["uniform"]) == ["2", "4", "8"] and results["training"]["epochs"] == 2
    export = results["export"]
    assert export["onnx_mismatches"] == 0 and export["exact_vs_integer_mismatches"] == 0
    assert set(export["configuration"].values()) == {4}
    assert (out / "configuration.onnx").stat().st_size > 1000 and (out / "train_accuracy.png").read_bytes()[:4] == \
        b"\x89PNG"
    printed = capsys.readouterr().out
    assert "uniform bit-width | accuracy (%) | loss" in printed and "random configurations (8)" in printed


def test_quantlib_train_refuses_bad_options_before_training(tmp_path, capsys):
    out = tmp_path / "out"
    assert quantlib_main.main(["train", "--yaml-path", str(EXAMPLE), "--out", str(out), "--export-config",
                               '{"features.0": 4}']) == 2
    assert "--export-config: Bit-width configuration does not fit the model: unknown layers [], layers not given " \
           "['classifier', " in capsys.readouterr().err
    assert quantlib_main.main(["train", "--yaml-path", str(EXAMPLE), "--model", "resnet", "--out", str(out)]) == 2
    assert "Model 'resnet' is neither a zoo model" in capsys.readouterr().err
    assert not out.exists()


def test_quantlib_train_on_pamap2_with_a_1d_resnet(edited_yaml, tmp_path, write_fake_pamap2_subject):
    data = tmp_path / "PAMAP2_Dataset" / "Protocol"
    data.mkdir(parents=True)
    for i, subject in enumerate((101, 102, 105)):
        write_fake_pamap2_subject(data / f"subject{subject}.dat", [1, 4], 700, seed=i)
    path = edited_yaml(EXAMPLE, lambda d: (d["training"].update(epochs=1, device="cpu"),
                                      d["model"].update(name="resnet1d10"),
                                      d["data"].update(dataset="pamap2", path=str(data.parent), batch_size=4)))
    out = tmp_path / "out"
    assert quantlib_main.main(["train", "--yaml-path", str(path), "--out", str(out)]) == 0
    results = json.loads((out / "train_results.json").read_text())
    assert sorted(results["uniform"]) == ["2", "4", "8"]
    assert all(0 <= v["accuracy"] <= 100 for v in results["uniform"].values())
    configuration = results["random_bitwidths"]["configurations"][0]["configuration"]
    assert "conv1" in configuration and "layers.0.0.conv1" in configuration and "fc" in configuration


def test_an_export_of_a_model_without_an_integer_form_is_refused_before_training(edited_yaml, tmp_path, capsys,
                                                                                write_fake_pamap2_subject):
    data = tmp_path / "Protocol"
    data.mkdir()
    for i, subject in enumerate((101, 105)):
        write_fake_pamap2_subject(data / f"subject{subject}.dat", [1], 600, seed=i)
    path = edited_yaml(EXAMPLE, lambda d: (d["model"].update(name="resnet1d10"),
                                      d["data"].update(dataset="pamap2", path=str(tmp_path))))
    out = tmp_path / "out"
    assert quantlib_main.main(["train", "--yaml-path", str(path), "--out", str(out), "--export-config",
                               "uniform:4", "--checkpoint-dir", str(tmp_path / "ckpt")]) == 2
    err = capsys.readouterr().err
    assert "conv1 (nn.Conv1d) at " in err and "integer path has no 1-D, 3-D or transposed convolution" in err
    assert not out.exists() and not (tmp_path / "ckpt").exists()  # nothing trained, nothing written


def test_model_variant_on_cifar_and_resume_from_the_checkpoint(edited_yaml, tmp_path, fake_cifar10):
    path = edited_yaml(EXAMPLE, lambda d: (d["training"].update(epochs=1, device="cpu"),
                                      d["data"].update(dataset="cifar10", path="unused", batch_size=25)))
    out, checkpoints = tmp_path / "out", tmp_path / "ckpt"
    common = ["train", "--yaml_path", str(path), "--quantization_method", "dorefa", "--model", "resnet",
              "--model_variant", "resnet8", "--data-path", str(fake_cifar10), "--out", str(out), "--checkpoint-dir",
              str(checkpoints)]
    assert quantlib_main.main(common) == 0
    first = torch.load(checkpoints / "last.pt", weights_only=True)
    assert first["epoch"] == 1 and any(k.startswith("model.layer1") for k in first["model"])
    assert quantlib_main.main([*common, "--epochs", "2", "--resume"]) == 0
    second = torch.load(checkpoints / "last.pt", weights_only=True)
    results = json.loads((out / "train_results.json").read_text())
    assert second["epoch"] == 2 and results["training"]["epochs"] == 2
    assert results["training"]["train_loss"][0] == first["history"]["train_loss"][0]  # epoch 1 resumed, not rerun
