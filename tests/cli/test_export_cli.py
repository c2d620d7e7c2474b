"""quantlib-export: the design card's call, the three kinds of checkpoint, every error path with its message and exit
code, and no output folder left behind when it fails."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from quantlib.backends.diana import export as diana_export
from quantlib.checkpoint import Checkpoint, save_checkpoint
from quantlib.cli.export import EXIT_HARDWARE, EXIT_MISMATCH, EXIT_OK, EXIT_USAGE, main
from quantlib.verification import LayerComparison
from quantlib.zoo import digits_cnn

ARCH = "quantlib.zoo:digits_cnn"


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = digits_cnn()
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, Checkpoint(ARCH, {}, [1, 8, 8], "float", model.state_dict(), "digits"))
    return path


def run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_design_card_call_exports_a_checkpoint_of_our_examples(float_checkpoint, capsys):
    code, out, _ = run([float_checkpoint, "--target", "diana"], capsys)
    assert code == EXIT_OK
    folder = float_checkpoint.with_name("model_diana")
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".quantlib-export", "model_QL_DORY.onnx", "model_QL_NOANNOTATION.onnx", "config.json", "input.txt",
         "model_report.json", *(f"out_layer{i}.txt" for i in range(6))])
    inputs = [int(line[:-1]) for line in (folder / "input.txt").read_text().splitlines()[1:]]
    assert len(inputs) == 64 and len(set(inputs)) > 5  # a real digit (the first calibration input), not zeros
    assert f"wrote 11 files to {folder}/" in out
    assert "0 mismatches" in out and out.splitlines()[0].split()[:3] == ["layer", "kind", "core"]


def test_a_checkpoint_of_a_later_stage_keeps_its_cores(float_checkpoint, tmp_path, capsys):
    from quantlib.backends.diana.diana_module import DianaModule
    from quantlib.data import data_source

    dm = DianaModule.from_fp_model(digits_cnn(), analog="auto")
    batches = data_source("digits").calibration_batches(2)
    dm.calibrate(batches).map_scales(batches).clip_scales_pow2()
    path = tmp_path / "net_pow2.pt"
    save_checkpoint(path, Checkpoint(ARCH, {}, [1, 8, 8], "pow2", dm.state_dict(), "digits"))
    code, out, _ = run([path, "--target", "diana", "--quiet", "-o", tmp_path / "out"], capsys)
    assert code == EXIT_OK and "(2 digital, 2 analog layers; dialect dory)" in out
    code, _, err = run([path, "--analog", "auto", "-o", tmp_path / "out2"], capsys)
    assert code == EXIT_USAGE and "is at stage 'pow2': its cores are fixed" in err
    assert not (tmp_path / "out2").exists()


def test_a_plain_state_dict_needs_arch_and_data(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save(digits_cnn().state_dict(), path)
    code, _, err = run([path, "-o", tmp_path / "out"], capsys)
    assert code == EXIT_USAGE and "is a plain state_dict: pass --arch module:callable" in err
    code, _, err = run([path, "--arch", ARCH, "-o", tmp_path / "out"], capsys)
    assert code == EXIT_USAGE and "needs calibration data: pass --calib" in err
    code, out, _ = run([path, "--arch", ARCH, "--calib", "digits", "--analog", "auto", "--dialect", "htvm",
                        "-o", tmp_path / "out", "--quiet"], capsys)
    assert code == EXIT_OK and "(2 digital, 2 analog layers; dialect htvm)" in out
    report = json.loads((tmp_path / "out" / "weights_report.json").read_text())
    assert report["dialect"] == "htvm"


def test_wrong_or_unknown_architecture(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save(digits_cnn().state_dict(), path)
    code, _, err = run([path, "--arch", "quantlib.zoo:resnet8", "--calib", "digits", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "does not fit --arch quantlib.zoo:resnet8" in err and "Missing key" in err
    code, _, err = run([path, "--arch", "no_such_package:net", "--calib", "digits", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "Cannot import architecture 'no_such_package:net'" in err
    code, _, err = run([path, "--arch", "resnet8", "--calib", "digits", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "must be 'module:callable'" in err
    assert not (tmp_path / "o").exists()


def test_missing_and_corrupt_files(tmp_path, capsys):
    code, _, err = run([tmp_path / "absent.pt"], capsys)
    assert code == EXIT_USAGE and f"Cannot read checkpoint '{tmp_path / 'absent.pt'}': no such file." in err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00not a checkpoint" * 10)
    code, _, err = run([corrupt], capsys)
    assert code == EXIT_USAGE and "it is not a PyTorch checkpoint" in err


def broken_model() -> nn.Module:
    """torch classes only, so that pickling it needs nothing from the tests; the kernel-2 conv breaks a rule."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_a_pickled_model_is_refused_unless_trusted(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(broken_model(), path)
    code, _, err = run([path, "--calib", "digits", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "unpickling runs code from the file, so it is refused" in err
    assert "--trust-pickle" in err and not (tmp_path / "o").exists()


def test_hardware_rule_violations_exit_3_with_the_report_written(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(broken_model(), path)
    code, out, err = run([path, "--trust-pickle", "--calib", "random:2", "--input-shape", "1,8,8",
                          "-o", tmp_path / "o"], capsys)
    assert code == EXIT_HARDWARE
    assert "1 hardware-rule violation(s):" in err and "2: [kernel-size] kernel 2x2" in err
    report = json.loads((tmp_path / "o" / "whole_report.json").read_text())
    [row] = [r for r in report["layers"] if r["layer"] == "2"]
    assert [f["rule"] for f in row["findings"] if f["severity"] == "error"] == ["kernel-size"]


def test_descriptor_errors(tmp_path, capsys, float_checkpoint):
    bad = tmp_path / "bad.yaml"
    bad.write_text("features.3: ANALOG\n  features.7: [\n")
    code, _, err = run([float_checkpoint, "--descriptors", bad, "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and f"Descriptor file '{bad}' is not valid YAML at line" in err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("features.33: ANALOG\n")
    code, _, err = run([float_checkpoint, "--descriptors", unknown, "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "names layer 'features.33', which the model does not have" in err
    assert "Did you mean 'features.3'" in err
    assert not (tmp_path / "o").exists()


def test_bad_options(tmp_path, capsys, float_checkpoint):
    code, _, err = run([float_checkpoint, "--input-shape", "1x8x8", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "--input-shape '1x8x8' must be 1 to 3 positive integers: C,H,W (images)" in err
    code, _, err = run([float_checkpoint, "--calib", "imagenet", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_USAGE and "Data 'imagenet' is not one of 'digits', 'cifar10:PATH'" in err
    code, _, err = run([float_checkpoint, "--calib", f"cifar10:{tmp_path / 'nowhere'}", "-o", tmp_path / "o"],
                       capsys)
    assert code == EXIT_USAGE and "CIFAR-10 folder" in err and "does not exist" in err
    with pytest.raises(SystemExit) as exit_info:
        main([str(float_checkpoint), "--target", "loihi"])
    assert exit_info.value.code == EXIT_USAGE and "invalid choice: 'loihi'" in capsys.readouterr().err


def test_a_verification_mismatch_exits_4(float_checkpoint, tmp_path, capsys, monkeypatch):
    real_check = diana_export.twin_check

    def one_mismatch(*args):
        check = real_check(*args)
        return lambda part, expected: [LayerComparison(c.layer, c.elements, 1, 1.0) if i == 0 else c
                                       for i, c in enumerate(check(part, expected))]

    monkeypatch.setattr(diana_export, "twin_check", one_mismatch)
    code, out, _ = run([float_checkpoint, "--quiet", "-o", tmp_path / "o"], capsys)
    assert code == EXIT_MISMATCH and re.search(r"onnxruntime on the twin: 1 mismatches in \d+ values at 6 layers", out)
    assert "vs the DORY file (interpreted): 0 mismatches in" in out


def test_the_console_script_prints_help_with_examples():
    script = Path(sys.executable).parent / "quantlib-export"
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "quantlib-export model.pt --target diana" in result.stdout
    assert "exit codes: 0 ok; 2 usage error" in result.stdout


def test_an_output_folder_holding_other_files_is_left_alone(float_checkpoint, tmp_path, capsys):
    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    code, _, err = run([float_checkpoint, "--quiet", "-o", precious], capsys)
    assert code == EXIT_USAGE and f"Output folder '{precious}' exists and is not an earlier quantlib export" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_refused_output_folder_is_refused_before_any_stage_runs(float_checkpoint, tmp_path, capsys, monkeypatch):
    from quantlib.backends.diana import cli

    precious = tmp_path / "project"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    ran = []
    monkeypatch.setattr(cli, "step", lambda *args, **kwargs: ran.append(args))
    code, _, err = run([float_checkpoint, "--quiet", "-o", precious], capsys)
    assert code == EXIT_USAGE and "is not an earlier quantlib export" in err and ran == []


def test_arch_from_the_current_folder_and_a_feature_vector_input(tmp_path, capsys, monkeypatch):
    """`--arch mymodels:mlp` finds mymodels.py in the current folder (as `python -m` would), and an MLP takes
    `--input-shape 16`."""
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n\n\ndef mlp():\n    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), "
        "nn.Linear(32, 4))\n")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    weights = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).state_dict()
    torch.save(weights, tmp_path / "mlp.pt")
    code, out, err = run([tmp_path / "mlp.pt", "--arch", "mymodels:mlp", "--input-shape", "16", "--calib",
                          "random:2", "--quiet", "-o", tmp_path / "out"], capsys)
    assert code == EXIT_OK, err
    assert "onnxruntime on the twin: 0 mismatches" in out and "DORY file (interpreted): 0 mismatches" in out
    assert "mymodels" not in sys.modules or str(tmp_path) not in sys.path  # the folder is not left on sys.path
    code, _, err = run([tmp_path / "mlp.pt", "--arch", "nomodels:mlp", "--input-shape", "16", "--calib", "random:2",
                        "-o", tmp_path / "out2"], capsys)
    assert code == EXIT_USAGE and f"looked in the current folder {tmp_path}" in err and "nomodels" in err


def test_the_report_prints_as_its_table():
    from quantlib.backends.diana.diana_module import DianaModule

    dm = DianaModule.from_fp_model(digits_cnn())
    table = str(dm.report())
    assert table.splitlines()[0].split()[:3] == ["layer", "kind", "core"]
    assert "features.0" in table and "LayerReport(" not in table
    assert repr(dm).splitlines()[0] == "DianaModule(stage='quantised', 4 digital and 0 analog layers)"
    assert repr(dm).splitlines()[1:] == table.splitlines()


def test_a_folder_marked_by_an_older_quantlib_is_refused_with_what_to_do(tmp_path):
    from quantlib.backends.diana.export import check_output_folder
    from quantlib.errors import ExportError

    old = tmp_path / "old_export"
    old.mkdir()
    (old / ".quantlib-export").write_text("written by quantlib; a new export may replace this folder\n")
    for name in ("config.json", "input.txt", "net_QL_DORY.onnx", "out_layer0.txt", "out_layer1.txt", "x.onnx"):
        (old / name).write_text("")
    with pytest.raises(ExportError, match=r"holds the marker of an export by an earlier quantlib version, which lists "
                       r"no files, so quantlib cannot tell which of its 7 entries \(\.quantlib-export, config\.json, "
                       r"input\.txt, net_QL_DORY\.onnx, out_layer0\.txt, \.\.\.\) it wrote; empty the folder yourself"):
        check_output_folder(old)
    assert len(list(old.iterdir())) == 7
