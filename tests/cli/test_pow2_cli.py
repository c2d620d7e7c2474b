"""``quantlib pow2 ptq|qat``: the pipeline from the command line prints the report's figures, writes the report, the
AIMET encodings, the integer ONNX and the PNG, and refuses bad options and configurations before writing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from quantlib.cli import main as quantlib_main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pow2" / "digits.yaml"
QUICK = ["--max-eval-batches", "1", "--device", "cpu", "--quiet"]


def pow2(*argv: str) -> int:
    return quantlib_main.main(["pow2", *argv])


@pytest.fixture
def quick_config(tmp_path) -> Path:
    """The example with a float model pretrained 6 epochs."""
    data = yaml.safe_load(EXAMPLE.read_text())
    data["model"]["pretrain"]["epochs"] = 6
    path = tmp_path / "quick.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_qat_prints_the_reports_figures_and_writes_every_file(quick_config, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    assert pow2("qat", "--config", str(quick_config), "--epochs", "2", "--out", str(out), *QUICK) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "digits_cnn_report.json").read_text())
    assert report["quantization_type"] == "PTQ -> Weight-Only QAT -> Final PTQ Pipeline"
    assert (f"accuracy: float {report['initial_accuracy']:.2f} %, PTQ {report['ptq_accuracy']:.2f} %, QAT (best) "
            f"{report['qat_best_accuracy']:.2f} %, final {report['final_accuracy']:.2f} %") in printed
    assert "integer ONNX in onnxruntime: 0 mismatches of 1,867,264 values; fake-quantised vs integer: 0 mismatches" \
        in printed
    assert "16 quantised tensors, 16 of 16 scales powers of two (2^-k, k from " in printed
    assert sorted(p.name for p in out.iterdir()) == ["digits_cnn_integer.onnx", "digits_cnn_pow2.png",
                                                    "digits_cnn_report.json", "digits_cnn_torch.encodings",
                                                    "mine.txt"]
    assert (out / "mine.txt").read_text() == "kept"
    assert (out / "digits_cnn_pow2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    encodings = json.loads((out / "digits_cnn_torch.encodings").read_text())
    assert encodings["param_encodings"]["features.0.weight"][0]["scale"] == \
        report["final_quantization_details"]["features.0.weight"]["scale"]


def test_ptq_runs_steps_one_and_three_without_training(quick_config, tmp_path, capsys):
    assert pow2("ptq", "--config", str(quick_config), "--out", str(tmp_path), *QUICK) == 0
    report = json.loads((tmp_path / "digits_cnn_report.json").read_text())
    assert report["pipeline_steps"] == ["Step 1: PTQ for weight/bias initialization",
                                        "Step 3: Final PTQ for input/output quantization"]
    assert report["qat_best_accuracy"] == report["ptq_accuracy"]
    assert "PTQ -> Final PTQ Pipeline" in capsys.readouterr().out


def test_no_final_ptq_stops_after_the_qat_and_writes_no_integer_model(quick_config, tmp_path, capsys):
    assert pow2("qat", "--config", str(quick_config), "--epochs", "1", "--no-final-ptq", "--out", str(tmp_path),
                *QUICK) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits_cnn_pow2.png", "digits_cnn_report.json",
                                                         "digits_cnn_torch.encodings", "quick.yaml"]
    printed = capsys.readouterr().out
    assert "PTQ -> Weight-Only QAT Pipeline" in printed and "onnxruntime" not in printed


@pytest.mark.parametrize(("argv", "message"), [
    (["qat", "--epochs", "-1"], "quantlib pow2 qat: error: --epochs -1: give an integer >= 0."),
    (["ptq", "--max-eval-batches", "0"], "quantlib pow2 ptq: error: --max-eval-batches 0: give an integer >= 1."),
    (["ptq", "--config", "/no/such.yaml"], "quantlib pow2 ptq: error: Cannot read configuration '/no/such.yaml'"),
])
def test_bad_options_are_refused_before_anything_is_written(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert pow2(*argv, "--out", str(out)) == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_a_bad_configuration_is_refused_naming_the_file_and_key(tmp_path, capsys):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["quantization"]["weight"]["bitwidth"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert pow2("qat", "--config", str(path), "--out", str(tmp_path / "out")) == 2
    assert (f"quantlib pow2 qat: error: {path}: key 'quantization.weight.bitwidth' has value 1; allowed: an integer "
            f"from 2 to 8.") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_command_lists_pow2():
    assert "quantlib pow2 ptq|qat --config CFG" in quantlib_main.USAGE and quantlib_main.SUBCOMMANDS["pow2"] == \
        "quantlib.cli.pow2"


def test_only_the_options_given_override_the_configuration():
    from quantlib.cli.pow2 import overrides_of, parser

    assert overrides_of(parser().parse_args(["qat"])) == {}  # training.progress and the rest stay the file's
    assert overrides_of(parser().parse_args(["ptq", "--quiet", "--seed", "0"])) == {"progress": False, "seed": 0,
                                                                                    "epochs": 0}
    assert overrides_of(parser().parse_args(["qat", "--epochs", "0", "--data-path", "d"])) == {"epochs": 0,
                                                                                              "data_path": "d"}
