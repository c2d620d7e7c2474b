"""``quantlib ptq`` and the ``quantlib`` command: results equal to the Python API's, the files it writes, the design
note's spellings, and every bad input refused with exit code 2 and a message before anything is written."""

from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
import torch

from quantlib import ptq
from quantlib.checkpoint import Checkpoint, save_checkpoint
from quantlib.cli import main as quantlib_main
from quantlib.cli import ptq as ptq_cli
from quantlib.data import digits_loaders
from quantlib.ptq.evaluation import collect_logits, top_k_accuracy
from quantlib.quantised_layers import quantised_layers
from quantlib.training import train_epochs
from quantlib.zoo import digits_cnn

EVAL_BATCHES = 1  # the first 256 test digits
CALIB = 128


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits CNN trained for 3 epochs, and its float quantlib checkpoint."""
    torch.manual_seed(0)
    train, _ = digits_loaders()
    model = train_epochs(digits_cnn(), train, epochs=3, lr=3e-3).eval()
    path = tmp_path_factory.mktemp("ckpt") / "digits.pt"
    save_checkpoint(path, Checkpoint("quantlib.zoo:digits_cnn", {}, [1, 8, 8], "float", model.state_dict(), "digits"))
    return model, path


def run_cli(*argv: str) -> int:
    return ptq_cli.main(["--quiet", "--calib-samples", str(CALIB), "--max-eval-batches", str(EVAL_BATCHES), *argv])


def test_results_equal_the_python_api(trained, tmp_path, capsys):
    model, path = trained
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(path), "--method", "rtn", "bias_correction", "--n-bits-w", "4", "2",
                   "--n-bits-a", "4", "--out", str(out)) == 0
    table = json.loads((out / "ptq_results.json").read_text())
    train, test = digits_loaders(batch_size=64)
    torch.manual_seed(0)
    calibration = ptq_cli.data_source("digits", batch_size=64).calibration_samples(CALIB)
    assert sum(len(x) for x in calibration) == CALIB
    test_batches = list(itertools.islice(test, EVAL_BATCHES))
    float_logits, labels = collect_logits(model, test_batches)
    assert table["float"]["top1"] == pytest.approx(top_k_accuracy(float_logits, labels, 1))
    rows = {(r["method"], r["w_bits"], r["a_bits"]): r for r in table["configurations"]}
    assert sorted(rows) == [("bias_correction", 2, 4), ("bias_correction", 4, 4), ("rtn", 2, 4), ("rtn", 4, 4)]
    for (method, w_bits, a_bits), row in rows.items():
        quantised = ptq.quantize(model, calibration, method, w_bits=w_bits, a_bits=a_bits)
        logits, _ = collect_logits(quantised, test_batches)
        assert row["top1"] == round(top_k_accuracy(logits, labels, 1), 2)
        assert row["top5"] == round(top_k_accuracy(logits, labels, 5), 2)
        assert row["alpha"] is None
    assert table["best"] == max(table["configurations"], key=lambda r: (r["top1"], r["top5"]))
    printed = capsys.readouterr().out
    assert f"best: {table['best']['method']} W{table['best']['w_bits']}A4" in printed
    assert (out / "ptq_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_correction_rows_and_logit_files(trained, tmp_path):
    _, path = trained
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(path), "--method", "rtn", "--n-bits-w", "2", "--alpha-list", "0.0", "1.0",
                   "--num-clusters-list", "3", "--pca-dim-list", "4", "--out", str(out)) == 0
    rows = json.loads((out / "ptq_results.json").read_text())["configurations"]
    assert [(r["alpha"], r["num_clusters"], r["pca_dim"]) for r in rows] == [(None, None, None), (0.0, 3, 4),
                                                                              (1.0, 3, 4)]
    assert rows[1]["top1"] == rows[0]["top1"]  # alpha 0 keeps the quantised logits
    folder = out / "results_alpha1.0_clusters3_pca4_digits_cnn_w2bit_a4bit"
    stem = "logits_digits_cnn_w2bit_a4bit_seed0"
    files = {kind: list(csv.reader((folder / f"{stem}_{kind}.csv").open()))
             for kind in ("quantized", "fullprecision", "corrected", "metadata")}
    assert files["quantized"][0] == [f"logit_{i}" for i in range(10)]
    assert all(len(rows_) == 257 for rows_ in files.values())  # header + the 256 evaluated digits
    corrected = np.array(files["corrected"][1:], dtype=float)
    labels = np.array([int(r[1]) for r in files["metadata"][1:]])
    assert rows[2]["top1"] == round(top_k_accuracy(corrected, labels, 1), 2)


def test_sensitivity_lists_every_layer_most_sensitive_first(trained, tmp_path, capsys):
    model, path = trained
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(path), "--method", "rtn", "--n-bits-w", "2", "--sensitivity",
                   "--out", str(out)) == 0
    rows = json.loads((out / "sensitivity_rtn_w2a4.json").read_text())
    calibration = [torch.zeros(1, 1, 8, 8)]
    names = [layer.name for layer in quantised_layers(ptq.quantize(model, calibration, "rtn"))]
    assert sorted(r["layer"] for r in rows) == sorted(names)
    drops = [r["drop"] for r in rows]
    assert drops == sorted(drops, reverse=True)
    assert "most sensitive first" in capsys.readouterr().out


def test_design_note_spellings(trained, tmp_path):
    _, path = trained
    out = tmp_path / "out"
    assert ptq_cli.main(["--quiet", "--quant_method", "rtn", "--n_bits_w", "3", "--n_bits_a", "5", "--checkpoint",
                         str(path), "--calib_samples", "64", "--max_eval_batches", "1", "--disable_8bit_head_stem",
                         "--no-channel-wise", "--out", str(out)]) == 0
    rows = json.loads((out / "ptq_results.json").read_text())["configurations"]
    assert [(r["method"], r["w_bits"], r["a_bits"]) for r in rows] == [("rtn", 3, 5)]


@pytest.mark.parametrize("argv, message", [
    (["--n-bits-w", "9"], "w_bits=9 is not allowed: give an integer from 2 to 8"),
    (["--param", "iters=many"], "--param iters=many: 'many' is not a int"),
    (["--param", "nosuch=1"], "--param 'nosuch=1': give NAME=VALUE with NAME a parameter of ['adaround']"),
    (["--param", "iters=0"], "PTQ method 'adaround': iters (0) and batch_size (32) must be >= 1"),
    (["--alpha-list", "1.5"], "alpha=1.5 must be in [0, 1]"),
    (["--num-clusters-list", "4"], "--num-clusters-list and --pca-dim-list need --alpha-list"),
    (["--arch", "resnet20"], "--arch resnet20 on digits needs --checkpoint"),
    (["--dataset", "cifar10"], "--dataset cifar10 needs --data-path"),
    (["--checkpoint", "missing.pt"], "Cannot read checkpoint 'missing.pt': no such file"),
    (["--calib-samples", "0"], "--calib-samples 0 must be a positive integer"),
    (["--export-onnx", "--pow2", "--override", "Linear:float"], "--export-onnx: the overrides keep ['Linear'] in "
                                                                "float"),
    (["--method", "rtn", "lapq", "--asymmetric"], "PTQ method 'lapq' (the network-wide method) fits clipping ranges"),
    (["--method", "aciq", "--pow2", "--param", "bit_allocation=true"], "bit_allocation needs per-channel weights and "
                                                                       "float scales"),
    (["--override", "features.3"], "--override 'features.3': give LAYER:SETTINGS"),
    (["--override", "features.3:w_bit=4"], "--override features.3:w_bit=4: 'w_bit=4' is not a setting"),
    (["--override", "features.3:w_bits=9"], "Override 'features.3': w_bits=9 must be an integer from 2 to 8."),
    (["--override", "features.3:method=adarund"], "method 'adarund' is not one of ['rtn', "),
    (["--override", "features.9:float"], "Override 'features.9' selects no layer; the Conv2d / Linear layers are "
                                          "['features.0', 'features.3', 'features.7', 'classifier']."),
])
def test_bad_input_exits_2_with_the_message_and_writes_nothing(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert ptq_cli.main(["--out", "out", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_overrides_reach_the_method(trained, tmp_path):
    model, path = trained
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(path), "--method", "rtn", "--n-bits-w", "2", "--override",
                   "features.3:w_bits=6,a_bits=8,per_channel=false", "--override", "Linear:float",
                   "--out", str(out)) == 0
    row = json.loads((out / "ptq_results.json").read_text())["configurations"][0]
    calibration = ptq_cli.data_source("digits", batch_size=64).calibration_samples(CALIB)
    quantised = ptq.quantize(model, calibration, "rtn", w_bits=2, overrides={
        "features.3": {"w_bits": 6, "a_bits": 8, "per_channel": False}, torch.nn.Linear: {"keep_float": True}})
    layers = {layer.name: layer for layer in quantised_layers(quantised)}
    assert sorted(layers) == ["features.0", "features.3", "features.7"]
    assert layers["features.3"].module.spec.qrange.bits == 6
    assert layers["features.3"].input_quantiser.spec.qrange.bits == 8
    _, test = digits_loaders(batch_size=64)
    logits, labels = collect_logits(quantised, itertools.islice(test, EVAL_BATCHES))
    assert row["top1"] == round(top_k_accuracy(logits, labels, 1), 2)


def test_asymmetric_ranges_reach_the_method(trained, tmp_path):
    model, path = trained
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(path), "--method", "rtn", "--n-bits-w", "3", "--n-bits-a", "3", "--asymmetric",
                   "--alpha-list", "0.0", "--num-clusters-list", "2", "--pca-dim-list", "2", "--out", str(out)) == 0
    written = out / "results_alpha0.0_clusters2_pca2_digits_cnn_w3bit_a3bit"
    cli_logits = np.loadtxt(written / "logits_digits_cnn_w3bit_a3bit_seed0_quantized.csv", delimiter=",", skiprows=1)
    calibration = ptq_cli.data_source("digits", batch_size=64).calibration_samples(CALIB)
    _, test = digits_loaders(batch_size=64)
    logits = {}
    for symmetric in (False, True):
        quantised = ptq.quantize(model, calibration, "rtn", w_bits=3, a_bits=3, symmetric=symmetric)
        logits[symmetric], _ = collect_logits(quantised, itertools.islice(test, EVAL_BATCHES))
    assert np.allclose(cli_logits, logits[False], rtol=1e-6, atol=1e-6)  # the CSV holds 7 significant digits
    assert not np.allclose(cli_logits, logits[True], rtol=1e-3, atol=1e-3)


def test_a_wrapped_data_parallel_state_dict_loads(trained, tmp_path):
    model, path = trained
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, wrapped)
    for checkpoint, out in ((path, "a"), (wrapped, "b")):
        assert run_cli("--checkpoint", str(checkpoint), "--method", "rtn", "--out", str(tmp_path / out)) == 0
    rows = [json.loads((tmp_path / out / "ptq_results.json").read_text())["configurations"][0] for out in "ab"]
    for row in rows:
        del row["seconds"]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("scales", [["--pow2"], ["--asymmetric"]])  # shifts; 24-bit multipliers and zero points
def test_exported_onnx_computes_the_evaluated_model(trained, tmp_path, scales):
    import onnx

    from quantlib.backends.onnx.verify import run_onnxruntime

    _, path = trained
    out = tmp_path / "out"
    assert run_cli("--checkpoint", str(path), "--method", "rtn", "--n-bits-w", "3", *scales, "--export-onnx",
                   "--out", str(out)) == 0
    row = json.loads((out / "ptq_results.json").read_text())["configurations"][0]
    assert row["onnx"] == str(out / "rtn_w3a4.onnx")
    assert row["onnx_mismatches"] == 0 and row["onnx_values"] > 10_000
    assert row["fake_vs_integer_mismatches"] == 0 if scales == ["--pow2"] else \
        row["fake_vs_integer_mismatches"] <= 1e-3 * row["onnx_values"]
    _, test = digits_loaders(batch_size=64)
    images, labels = next(iter(itertools.islice(test, EVAL_BATCHES)))
    logits = run_onnxruntime(onnx.load(row["onnx"]), images.numpy())["output_0"]
    assert row["top1"] == round(top_k_accuracy(logits, labels.numpy(), 1), 2)


def test_state_dict_of_the_wrong_architecture_is_refused(trained, tmp_path, capsys):
    model, _ = trained
    path = tmp_path / "weights.pt"
    torch.save(model.state_dict(), path)
    assert run_cli("--checkpoint", str(path), "--arch", "quantlib.zoo:resnet8", "--out", str(tmp_path / "o")) == 2
    assert f"Checkpoint '{path}' does not fit --arch quantlib.zoo:resnet8" in capsys.readouterr().err


def test_quantlib_command_dispatches_and_refuses_unknown_subcommands(capsys):
    assert quantlib_main.main(["nosuch"]) == 2
    assert "unknown subcommand 'nosuch'; choose one of ['export', 'ptq', 'train', 'distil', 'pow2']" in \
        capsys.readouterr().err
    assert quantlib_main.main(["ptq", "--list-methods"]) == 0
    listed = capsys.readouterr().out
    assert [line.split(":")[0] for line in listed.splitlines()] == ptq.available_methods()
    with pytest.raises(SystemExit) as exit_:
        quantlib_main.main(["export", "--help"])
    assert exit_.value.code == 0
    assert "--target" in capsys.readouterr().out
