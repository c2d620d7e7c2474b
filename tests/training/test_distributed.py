"""Data parallelism the way users run it, through torchrun with two CPU processes (gloo): both ranks end with the
same weights (BatchNorm statistics included; a DianaModule's QAT too), equal to one process trained with the global
batch, and the checkpoint resumes in one process with a warning; examples/cifar10/train.py runs under torchrun,
printing and writing on rank 0 only. The whole staged DIANA recipe too: the ranks start from different weights and
calibration data on purpose, yet every stage starts from rank 0's, so both end with the same integer model; only rank
0 writes stage checkpoints and the export, and examples/cifar10/quantize_qat.py runs that way as documented."""

import logging
import os
import re
import runpy
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from quantlib.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from quantlib.training import fit
from quantlib.zoo import digits_cnn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "cifar10"
TOLERANCE = 1e-6  # absolute, per weight: the ranks average their gradients, one process averages the global batch

SCRIPT = '''
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from quantlib.backends.diana import DianaModule
from quantlib.training import TrainConfig, fit


def build():
    """96 points of 4 classes and a small MLP without batch statistics (no BatchNorm, no dropout)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(96, 8, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)), TensorDataset(x, y)


def config(out):
    return TrainConfig(epochs=3, lr=0.2, optimiser="sgd", scheduler="none", device="cpu", progress=False, seed=0,
                       checkpoint_dir=Path(out) / "checkpoints")


if __name__ == "__main__":
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")  # fit uses a group that exists as it is (in train.py's run fit makes its own)
    model, data = build()
    result = fit(model, DataLoader(data, batch_size=8, shuffle=True), config(out),
                 eval_loader=DataLoader(data, batch_size=10))
    with_bn = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))
    fit(with_bn, DataLoader(data, batch_size=8, shuffle=True), TrainConfig(epochs=1, device="cpu", progress=False))
    images = TensorDataset(data.tensors[0].reshape(96, 2, 2, 2), data.tensors[1])
    torch.manual_seed(0)
    dm = DianaModule.from_fp_model(nn.Sequential(nn.Conv2d(2, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(16, 4)),
                                   images.tensors[0][:1]).calibrate([images.tensors[0]])
    fit(dm, DataLoader(images, batch_size=8, shuffle=True), TrainConfig(epochs=1, device="cpu", progress=False),
        param_groups=dm.param_groups())  # a QAT stage: quantisers whose clips get no gradient (floor qops)
    torch.save({"model": model.state_dict(), "train_loss": result.train_loss, "eval_accuracy": result.eval_accuracy,
                "with_bn": with_bn.state_dict(), "diana": dm.state_dict(), "group_kept": dist.is_initialized()},
               out / f"rank{os.environ['RANK']}.pt")
    dist.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: object, cwd: Path) -> str:
    """``python -m torch.distributed.run --nproc_per_node 2 ...`` on a free port, one thread per process; stdout."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=cwd, timeout=180,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_two_processes_agree_with_each_other_and_with_one_process_of_the_global_batch(tmp_path, caplog):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    torchrun(script, tmp_path, cwd=tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(rank0["model"][k], rank1["model"][k]) for k in rank0["model"])
    assert rank0["train_loss"] == rank1["train_loss"] and rank0["eval_accuracy"] == rank1["eval_accuracy"]
    assert all(torch.equal(rank0["with_bn"][k], rank1["with_bn"][k]) for k in rank0["with_bn"])  # BN statistics too
    tensors = [k for k, v in rank0["diana"].items() if isinstance(v, torch.Tensor)]
    assert len(tensors) > 6 and all(torch.equal(rank0["diana"][k], rank1["diana"][k]) for k in tensors)
    assert rank0["group_kept"] and rank1["group_kept"]

    # One process, batches of 2 x 8 in the order the two ranks' DistributedSamplers shared out.
    definitions = runpy.run_path(str(script))
    model, data = definitions["build"]()
    config = definitions["config"](tmp_path)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=config.seed)
    single = fit(model, DataLoader(data, batch_size=16, sampler=sampler), replace(config, checkpoint_dir=None),
                 eval_loader=DataLoader(data, batch_size=10))
    difference = max((model.state_dict()[k] - v).abs().max().item() for k, v in rank0["model"].items())
    assert difference <= TOLERANCE
    assert max(abs(a - b) for a, b in zip(single.train_loss, rank0["train_loss"], strict=True)) <= TOLERANCE
    assert single.eval_accuracy == rank0["eval_accuracy"]  # the ranks' counts summed: the whole set's accuracy
    assert single.train_loss[-1] < single.train_loss[0] and single.eval_accuracy[-1] > 50.0

    checkpoint = tmp_path / "checkpoints" / "last.pt"
    assert [p.name for p in checkpoint.parent.iterdir()] == ["last.pt"]
    saved = torch.load(checkpoint, weights_only=True)
    assert (saved["world_size"], saved["backend"], saved["epoch"]) == (2, "gloo", 3)
    assert all(torch.equal(saved["model"][k], v) for k, v in rank0["model"].items())

    caplog.set_level(logging.WARNING, logger="quantlib.training")
    resumed = fit(definitions["build"]()[0], DataLoader(data, batch_size=16), replace(config, epochs=4, resume=True))
    assert any("written by 2 process(es), with 1" in r.getMessage() for r in caplog.records)
    assert resumed.epoch == 4 and resumed.train_loss[:3] == rank0["train_loss"]


@pytest.mark.slow  # 15-16 s on two idle cores, 20 s on busy ones: torchrun's start and the imports of two workers
def test_train_py_under_torchrun_prints_and_writes_on_rank_0_only(tmp_path):
    stdout = torchrun(EXAMPLES / "train.py", "--model", "digits_cnn", "--dataset", "digits", "--epochs", "2",
                      "--out", tmp_path / "out", "--checkpoint-dir", tmp_path / "checkpoints", cwd=tmp_path)
    printed = re.findall(r"float accuracy: ([0-9.]+) %", stdout)
    assert len(printed) == 1 and stdout.count("training digits_cnn on digits for 2 epochs") == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["digits_cnn_float.pt"]
    written = load_checkpoint(tmp_path / "out" / "digits_cnn_float.pt")
    assert written.stage == "float" and f"{written.history['float']:.2f}" == printed[0]
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["world_size"], saved["backend"], saved["epoch"]) == (2, "gloo", 2)
    assert all(torch.equal(saved["model"][k], v) for k, v in written.state_dict.items())



@pytest.mark.slow  # torchrun's start and two workers' imports
def test_joint_mixed_precision_trains_under_torchrun_one_forward_and_backward_per_step(tmp_path):
    config = (EXAMPLES.parent / "mixed_precision" / "digits.yaml").read_text()
    (tmp_path / "cfg.yaml").write_text(config.replace("epochs: 20", "epochs: 2").replace("device: auto", "device: cpu"))
    stdout = torchrun("-m", "quantlib.cli.main", "train", "--yaml-path", tmp_path / "cfg.yaml", "--out",
                      tmp_path / "out", "--checkpoint-dir", tmp_path / "checkpoints", cwd=tmp_path)
    assert stdout.count("uniform bit-width | accuracy (%) | loss") == 1  # rank 0 alone validates and writes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.pt", "train_accuracy.png",
                                                                     "train_results.json"]
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["world_size"], saved["epoch"]) == (2, 2)
    model = torch.load(tmp_path / "out" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved["model"][f"model.{k}"], v) for k, v in model.items())  # MultiPass wraps it


@pytest.mark.slow  # torchrun's start and two workers' imports
def test_a_distillation_chain_trains_under_torchrun_and_rank_0_writes(tmp_path):
    stdout = torchrun("-m", "quantlib.cli.main", "distil", "--chain", "32/32,4/4", "--arch", "preact_resnet8",
                      "--epochs", "1", "--device", "cpu", "--out", tmp_path / "out", cwd=tmp_path)
    assert stdout.count("step 1 4/4 (teacher 32/32)") == 1  # rank 0 alone prints and writes
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["distil_accuracy.png", "distil_results.json",
                                                                     "step0_w32a32.pt", "step1_w4a4.pt"]

RECIPE_SCRIPT = '''
import os
import sys
from pathlib import Path

import torch

from quantlib.backends.diana.diana_module import DianaModule
from quantlib.backends.diana.recipe import RecipeConfig, run_recipe
from quantlib.data import data_source
from quantlib.distributed import process_group
from quantlib.zoo import digits_cnn

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
torch.manual_seed(rank)  # other weights, other shuffles: agreement must come from the recipe
data = data_source("digits", batch_size=64)
config = RecipeConfig.from_mapping({"calibration_batches": 2})
with process_group("cpu"):
    dm = DianaModule.from_fp_model(digits_cnn(), torch.zeros(1, 1, 8, 8), analog="auto")
    stages = []
    result = run_recipe(dm, data.train, data.test, config, out / "net_diana", "net", retrain=False, progress=False,
                        on_stage=lambda dm, history: stages.append(list(history)))  # no retraining: nothing else syncs
    torch.save({"integer": dm.integer.state_dict(), "accuracy": result.accuracy, "stages": stages,
                "mismatches": None if result.export is None else result.export.mismatches,
                "analog": dm.choice.analog}, out / f"rank{rank}.pt")
'''


def test_two_ranks_of_the_post_training_recipe_end_with_one_integer_model_exported_once(tmp_path):
    script = tmp_path / "ddp_recipe.py"
    script.write_text(RECIPE_SCRIPT)
    torchrun(script, tmp_path, cwd=tmp_path)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    tensors = [k for k, v in rank0["integer"].items() if isinstance(v, torch.Tensor)]
    assert len(tensors) > 10 and all(torch.equal(rank0["integer"][k], rank1["integer"][k]) for k in tensors)
    assert rank0["analog"] and rank0["analog"] == rank1["analog"]
    assert {k: v for k, v in rank0["accuracy"].items() if k != "onnxruntime"} == rank1["accuracy"]
    assert rank0["accuracy"]["integer"] == rank0["accuracy"]["onnxruntime"]  # an untrained model: no accuracy bar
    assert rank0["stages"] == [["calibrated"], ["calibrated", "scales_mapped"],
                               ["calibrated", "scales_mapped", "pow2"], ["calibrated", "scales_mapped", "pow2",
                                                                          "hw_mapped"]]
    assert rank1["stages"] == [] and rank0["mismatches"] == 0 and rank1["mismatches"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp_recipe.py", "net_diana", "rank0.pt", "rank1.pt"]


@pytest.mark.slow  # about 25 s: torchrun's start, two workers' imports, a short recipe on the digits
def test_quantize_qat_py_under_torchrun_prints_and_writes_on_rank_0_only(tmp_path):
    torch.manual_seed(0)
    float_path = save_checkpoint(tmp_path / "digits_cnn_float.pt", Checkpoint(
        "quantlib.zoo:digits_cnn", {}, [1, 8, 8], "float", digits_cnn().state_dict(), "digits"))
    config = tmp_path / "short.yaml"
    config.write_text("stages:\n  8bit: {epochs: 1, lr: 3.0e-4}\n  map_scales: {epochs: 1, lr: 1.0e-3}\n"
                      "  pow2: {epochs: 1, lr: 3.0e-4}\nanalog: auto\ncalibration_batches: 2\nbatch_size: 64\n")
    stdout = torchrun(EXAMPLES / "quantize_qat.py", "--checkpoint", float_path, "--dataset", "digits", "--config",
                      config, "--out", tmp_path / "out", "--threads", "1", cwd=tmp_path)
    assert stdout.count("exported to") == 1 and len(re.findall(r"^\s+pow2: [0-9.]+ %$", stdout, re.M)) == 1
    assert re.search(r"exported to .*net_diana|exported to .*digits_cnn_diana/ \(the integer model vs onnxruntime "
                     r"on the twin: 0 mismatches", stdout)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["digits_cnn_calibrated.pt", "digits_cnn_diana", "digits_cnn_hw_mapped.pt", "digits_cnn_pow2.pt",
                       "digits_cnn_scales_mapped.pt"]
    assert load_checkpoint(tmp_path / "out" / "digits_cnn_pow2.pt").stage == "pow2"
