"""The example scripts end to end on a tiny fake CIFAR-10: float training, the QAT recipe (resumed from a middle
stage), PTQ, and quantlib-export on a checkpoint they wrote, with no flag but --target."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from quantlib.checkpoint import load_checkpoint

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cifar10"
CONFIG = """
float_training: {epochs: 1, lr: 1.0e-3}
stages: {8bit: {epochs: 1, lr: 1.0e-4}, map_scales: {epochs: 1, lr: 1.0e-4}, pow2: {epochs: 1, lr: 1.0e-5}}
analog: auto
calibration_batches: 2
noise_sigma: 0.02
batch_size: 32
"""


def script(name: str, *args, cwd: Path) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True,
                            cwd=cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def trained(tmp_path, fake_cifar10):
    config = tmp_path / "tiny.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "ckpt"
    stdout = script("train.py", "--model", "resnet8", "--data-path", fake_cifar10, "--config", config, "--out", out,
                    cwd=tmp_path)
    assert "float accuracy:" in stdout
    return out, config


def test_qat_writes_every_stage_resumes_and_exports(trained, tmp_path):
    out, config = trained
    stdout = script("quantize_qat.py", "--checkpoint", out / "resnet8_float.pt", "--config", config, "--out", out,
                    cwd=tmp_path)
    stages = ["calibrated", "scales_mapped", "pow2", "hw_mapped"]
    assert all((out / f"resnet8_{s}.pt").exists() for s in stages)
    assert "cores: 2 digital, 8 analog" in stdout and "onnxruntime on the twin: 0 mismatches" in stdout
    assert "DORY file (interpreted): 0 mismatches" in stdout
    history = load_checkpoint(out / "resnet8_hw_mapped.pt").history
    assert list(history) == ["float", *stages]
    lines = dict(line.split(":") for line in stdout.splitlines() if line.strip().startswith(("integer", "onnx")))
    assert lines["       integer"] == lines["   onnxruntime"]  # onnxruntime on the twin = the integer model
    resumed = script("quantize_qat.py", "--checkpoint", out / "resnet8_scales_mapped.pt", "--config", config,
                     "--out", tmp_path / "resumed", cwd=tmp_path)
    assert "calibrated" not in resumed and "pow2:" in resumed
    assert sorted(p.name for p in (tmp_path / "resumed").glob("*.pt")) == ["resnet8_hw_mapped.pt", "resnet8_pow2.pt"]


def test_ptq_and_the_export_command_on_a_float_checkpoint(trained, tmp_path):
    out, config = trained
    stdout = script("quantize_ptq.py", "--checkpoint", out / "resnet8_float.pt", "--config", config, "--out",
                    tmp_path / "ptq", cwd=tmp_path)
    assert (tmp_path / "ptq" / "resnet8_diana" / "resnet8_QL_DORY.onnx").exists()
    assert "onnxruntime:" in stdout
    checkpoint = load_checkpoint(out / "resnet8_float.pt")
    assert checkpoint.data.startswith("cifar10:") and checkpoint.input_shape == [3, 32, 32]
    assert Path(checkpoint.data.split(":", 1)[1]).is_absolute()  # usable from any working directory
    export = Path(sys.executable).parent / "quantlib-export"
    result = subprocess.run([str(export), str(out / "resnet8_float.pt"), "--target", "diana"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    folder = out / "resnet8_float_diana"
    config_json = json.loads((folder / "config.json").read_text())
    assert config_json["onnx_file"] == "resnet8_float_QL_DORY.onnx"
    assert len(list(folder.glob("out_layer*.txt"))) == 14  # 9 convs, 3 adds, the pool, the classifier


def test_scripts_explain_missing_data(tmp_path):
    result = subprocess.run([sys.executable, str(EXAMPLES / "train.py"), "--model", "resnet8"], capture_output=True,
                            text=True, cwd=tmp_path)
    assert result.returncode != 0
    assert "give --data-path PATH (a cifar-10-batches-py folder) or --dataset digits" in result.stderr
    torch.save({"not": "a checkpoint"}, tmp_path / "x.pt")
    result = subprocess.run([sys.executable, str(EXAMPLES / "quantize_qat.py"), "--checkpoint", str(tmp_path / "x.pt"),
                             "--dataset", "digits"], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and "is not a quantlib checkpoint" in result.stderr
