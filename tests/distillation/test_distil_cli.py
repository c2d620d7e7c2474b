"""``quantlib distil``: a three-step chain on the digits trains end to end, beside individually trained twins, and
resumes from its second step; bad options are refused before any data is read."""

from __future__ import annotations

import json

import torch

from quantlib.cli import main as quantlib_main


def test_a_three_step_chain_runs_and_resumes_from_its_second_step(tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["distil", "--chain", "32/32,4/4,2/2", "--arch", "preact_resnet8", "--epochs", "1", "--individual",
            "--inspect", "--device", "cpu", "--out", str(out)]
    assert quantlib_main.main(argv) == 0
    first = json.loads((out / "distil_results.json").read_text())["steps"]
    assert [r["bits"] for r in first] == ["32/32", "4/4", "2/2"] and [r["teacher"] for r in first] == [
        None, "32/32", "4/4"]
    assert all(0 < r["accuracy_chained"] <= 100 and 0 < r["accuracy_individual"] <= 100 for r in first)
    assert first[0]["accuracy_individual"] == first[0]["accuracy_chained"]  # no teacher at the first step
    levels = json.loads((out / "levels.json").read_text())
    assert all(lv["distinct"] <= 2 ** 2 for lv in levels["2/2"] if lv["bits"] == 2)
    assert (out / "distil_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    second = torch.load(out / "step1_w4a4.pt", weights_only=True)["state_dict"]
    (out / "step2_w2a2.pt").unlink()  # the chain stopped after its second step
    capsys.readouterr()
    assert quantlib_main.main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert f"read {out / 'step0_w32a32.pt'} (--resume)" in printed and f"read {out / 'step1_w4a4.pt'}" in printed
    assert f"read {out / 'step2_w2a2.pt'}" not in printed and (out / "step2_w2a2.pt").is_file()
    resumed = json.loads((out / "distil_results.json").read_text())["steps"]
    assert [r["accuracy_chained"] for r in resumed[:2]] == [r["accuracy_chained"] for r in first[:2]]
    assert all(torch.equal(v, torch.load(out / "step1_w4a4.pt", weights_only=True)["state_dict"][k])
               for k, v in second.items())


def test_the_design_notes_pair_flags_and_bad_options(tmp_path, capsys):
    out = tmp_path / "out"
    assert quantlib_main.main(["distil", "--chain", "8/8,4/x", "--out", str(out)]) == 2
    assert "--chain step '4/x': give W/A bits, e.g. 4/4." in capsys.readouterr().err
    assert quantlib_main.main(["distil", "--chain", "8/8,17/4", "--out", str(out)]) == 2
    assert "--chain step '17/4': QuantSpec: w_bits=17 must be an integer from 1 to 16, or 32" in \
        capsys.readouterr().err
    assert quantlib_main.main(["distil", "--teacher-wbits", "8", "--out", str(out)]) == 2
    assert "or all of --teacher-wbits, --teacher-abits, --student-wbits, --student-abits" in capsys.readouterr().err
    assert quantlib_main.main(["distil", "--chain", "8/8", "--arch", "preact_resnet21", "--out", str(out)]) == 2
    assert "depth 21 must be 6n + 2 (basic) with n >= 1" in capsys.readouterr().err
    assert quantlib_main.main(["distil", "--chain", "8/8", "--dataset", "cifar10", "--out", str(out)]) == 2
    assert "--dataset cifar10 needs --data-path" in capsys.readouterr().err
    assert not out.exists()
    assert quantlib_main.main(["distil", "--teacher_wbits", "8", "--teacher_abits", "8", "--teacher_quantization",
                               "dorefa", "--student_wbits", "4", "--student_abits", "4", "--arch", "preact_resnet8",
                               "--epochs", "1", "--device", "cpu", "--out", str(out)]) == 0
    steps = json.loads((out / "distil_results.json").read_text())["steps"]
    assert [(r["bits"], r["teacher"]) for r in steps] == [("8/8", None), ("4/4", "8/8")]


def test_an_lsq_chain_with_quantised_residual_sums_is_taught_from_the_teachers_weights(tmp_path):
    out = tmp_path / "out"
    argv = ["distil", "--chain", "4/4,2/2", "--quantization", "lsq", "--residual", "quantised", "--arch",
            "preact_resnet8", "--epochs", "1", "--inspect", "--device", "cpu", "--out", str(out)]
    assert quantlib_main.main(argv) == 0
    levels = json.loads((out / "levels.json").read_text())
    residual = [lv for lv in levels["2/2"] if lv["layer"].endswith(".residual")]
    assert len(residual) == 3 and all(lv["bits"] == 2 and lv["distinct"] <= 4 for lv in residual)
    student = torch.load(out / "step1_w2a2.pt", weights_only=True)["state_dict"]
    assert student["layer1.0.conv1.steps.2"].item() > 0 and "layer1.0.conv1.steps.4" not in student
