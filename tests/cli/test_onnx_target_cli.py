"""quantlib-export --target onnx: a float checkpoint as one standard integer ONNX file that onnxruntime runs exactly as
the integer model, every refusal before any work, and the generic CLI not importing DIANA."""

import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch

from quantlib.checkpoint import Checkpoint, save_checkpoint
from quantlib.cli.export import EXIT_OK, EXIT_USAGE, main
from quantlib.cli.inputs import calibration_inputs
from quantlib.true_quantisation import pow2_integer_flow
from quantlib.zoo import digits_cnn

ARCH = "quantlib.zoo:digits_cnn"


@pytest.fixture(scope="module")
def float_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, Checkpoint(ARCH, {}, [1, 8, 8], "float", digits_cnn().state_dict(), "digits"))
    return path


def test_a_float_checkpoint_becomes_an_integer_onnx_that_onnxruntime_runs_as_the_integer_model(float_checkpoint,
                                                                                                capsys):
    code = main([str(float_checkpoint), "--target", "onnx"])
    out = capsys.readouterr().out
    assert code == EXIT_OK
    path = float_checkpoint.with_name("model_int.onnx")
    assert f"wrote {path} in" in out
    assert "onnxruntime vs the integer model: 0 mismatches in" in out
    torch.manual_seed(0)
    calibration = calibration_inputs("digits", (1, 8, 8))
    x = torch.cat(calibration)
    flow = pow2_integer_flow(digits_cnn().eval(), x[:1], calibration)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x[:32].numpy().astype(np.float32)})[0]
    with torch.no_grad():
        expected = flow.integer(x[:32])
    assert got.shape == (32, 10) and np.array_equal(got, expected.numpy())


def test_a_checkpoint_of_a_staged_recipe_is_refused_with_what_to_do(tmp_path, capsys):
    from quantlib.backends.diana.diana_module import DianaModule

    dm = DianaModule.from_fp_model(digits_cnn())
    path = save_checkpoint(tmp_path / "net_quantised.pt",
                           Checkpoint(ARCH, {}, [1, 8, 8], "quantised", dm.state_dict(), "digits"))
    assert main([str(path), "--target", "onnx"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "is at stage 'quantised' of a staged recipe, not a float model; export it with the target that wrote " \
           "it" in err
    assert not (tmp_path / "net_quantised_int.onnx").exists()


def test_a_file_quantlib_did_not_write_is_never_overwritten(float_checkpoint, tmp_path, capsys):
    precious = tmp_path / "notes.onnx"
    precious.write_text("years of work")
    assert main([str(float_checkpoint), "--target", "onnx", "-o", str(precious)]) == EXIT_USAGE
    assert "exists and is not an ONNX file quantlib wrote; choose another -o" in capsys.readouterr().err
    assert precious.read_text() == "years of work"


def test_a_plain_state_dict_without_calibration_data_is_refused(tmp_path, capsys):
    path = tmp_path / "weights.pt"
    torch.save(digits_cnn().state_dict(), path)
    assert main([str(path), "--target", "onnx", "--arch", ARCH]) == EXIT_USAGE
    assert "pass --calib digits, cifar10:PATH, cifar100:PATH, imagenet:PATH or random:N" in capsys.readouterr().err
    assert not (tmp_path / "weights_int.onnx").exists()


def test_the_generic_cli_imports_a_target_only_when_asked_for():
    code = ("import sys; import quantlib.cli.export, quantlib.backends.onnx.cli; "
            "print(sorted(m for m in sys.modules if m.startswith('quantlib.backends.diana')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_each_target_lists_its_own_options(capsys):
    with pytest.raises(SystemExit):
        main(["--target", "diana", "--help"])
    diana = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--target", "onnx", "--help"])
    onnx_help = capsys.readouterr().out
    assert "--target diana:" in diana and "--dialect {dory,htvm}" in diana and "--descriptors DESCRIPTORS" in diana
    assert "--target diana:" not in onnx_help and "--dialect {dory,htvm}" not in onnx_help
