"""The recipe's config files and steps, and checkpoints of every kind the examples write."""

from pathlib import Path

import pytest
import torch

from quantlib.backends.diana.diana_module import DianaModule, Stage
from quantlib.backends.diana.recipe import RecipeConfig, StageTraining, restore, step
from quantlib.checkpoint import Checkpoint, CheckpointError, build_architecture, load_checkpoint, save_checkpoint
from quantlib.zoo import digits_cnn

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "examples" / "cifar10" / "configs").glob("*.yaml"))
X = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_shipped_configs_load(path):
    config = RecipeConfig.from_yaml(path)
    assert config.float_training.epochs > 0 and config.analog == "auto"
    assert all(config.training(stage).epochs > 0 for stage in (Stage.CALIBRATED, Stage.SCALES_MAPPED, Stage.POW2))
    assert config.training(Stage.HW_MAPPED) == StageTraining()


def test_config_errors_name_the_key():
    with pytest.raises(ValueError, match=r"cfg: unknown key\(s\) \['epochs'\]"):
        RecipeConfig.from_mapping({"epochs": 3}, "cfg")
    with pytest.raises(ValueError, match=r"cfg: unknown stage\(s\) \['fp16'\] under 'stages'"):
        RecipeConfig.from_mapping({"stages": {"fp16": {}}}, "cfg")
    with pytest.raises(ValueError, match=r"cfg: stages.pow2: epochs must be an integer >= 0 and lr a number > 0, "
                                         r"got -1, 0.001"):
        RecipeConfig.from_mapping({"stages": {"pow2": {"epochs": -1}}}, "cfg")
    with pytest.raises(ValueError, match="Cannot read recipe config"):
        RecipeConfig.from_yaml("/nonexistent/config.yaml")


def test_step_walks_the_stages_in_order():
    dm = DianaModule.from_fp_model(digits_cnn(), analog="auto")
    assert [step(dm, [X]) for _ in range(5)] == [Stage.CALIBRATED, Stage.SCALES_MAPPED, Stage.POW2,
                                                 Stage.HW_MAPPED, Stage.INTEGER]
    with pytest.raises(Exception, match="at stage 'integer', the last one"):
        step(dm, [X])


def test_checkpoints_restore_float_models_and_stages(tmp_path):
    model = digits_cnn()
    path = save_checkpoint(tmp_path / "f.pt", Checkpoint("quantlib.zoo:digits_cnn", {}, [1, 8, 8], "float",
                                                         model.state_dict(), "digits", {"float": 50.0}))
    checkpoint = load_checkpoint(path)
    assert (checkpoint.data, checkpoint.history) == ("digits", {"float": 50.0})
    restored = restore(checkpoint)
    assert torch.equal(restored.eval()(X), model.eval()(X))
    dm = DianaModule.from_fp_model(model, analog="auto").calibrate([X]).map_scales([X])
    staged = save_checkpoint(tmp_path / "s.pt", Checkpoint("quantlib.zoo:digits_cnn", {}, [1, 8, 8],
                                                           "scales_mapped", dm.state_dict()))
    again = restore(load_checkpoint(staged))
    assert again.stage is Stage.SCALES_MAPPED and again.cores == dm.cores
    with torch.no_grad():
        assert torch.equal(again.eval()(X), dm.eval()(X))
    wrong = Checkpoint("quantlib.zoo:resnet8", {}, [1, 8, 8], "float", model.state_dict())
    with pytest.raises(CheckpointError, match="does not fit architecture 'quantlib.zoo:resnet8'"):
        restore(wrong)


def test_architecture_errors():
    with pytest.raises(CheckpointError, match="returned a dict, not a torch.nn.Module"):
        build_architecture("builtins:dict", {"a": 1})
    with pytest.raises(CheckpointError, match=r"failed to build with \{'depth': 3\}"):
        build_architecture("quantlib.zoo:digits_cnn", {"depth": 3})
