"""The power-of-two pipeline's YAML: the example reads key for key, every bad key or value is refused naming the file,
the key, the value and what is allowed, and models and data sets a user registers are named like ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from quantlib.config_checks import ConfigError
from quantlib.data.sources import DATASETS, Dataset, data_source
from quantlib.data.validation_split import hold_out
from quantlib.pow2 import load_config, run
from quantlib.zoo import ARCHITECTURES, digits_cnn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pow2" / "digits.yaml"


def test_the_example_reads_key_for_key():
    config = load_config(EXAMPLE)
    assert [config.tensor(k).as_dict() for k in ("weight", "input", "output", "bias")] == [
        {"bitwidth": 8, "symmetric": True, "power_of_2": True}] * 3 + [
        {"bitwidth": 32, "symmetric": True, "power_of_2": True}]
    assert (config.scale_rounding, config.model, config.num_classes, config.dataset) == ("round", "digits_cnn", 10,
                                                                                         "digits")
    t = config.training
    assert (t.epochs, t.lr, t.weight_decay, t.optimiser, t.scheduler, t.step_size, t.gamma, t.seed) == (
        5, 1e-4, 0.01, "adamw", "steplr", 3, 0.5, 0)
    assert (config.batch_size, config.criterion, config.validation_split) == (64, "CrossEntropyLoss", 0.1)
    assert (config.calibration_batches, config.max_eval_batches, config.pretrain_epochs) == (10, None, 20)


def test_overrides_win_over_the_file():
    config = load_config(EXAMPLE, {"epochs": 0, "max_eval_batches": 2, "device": "cpu", "seed": 7})
    assert (config.training.epochs, config.max_eval_batches, config.training.device, config.training.seed) == (
        0, 2, "cpu", 7)
    with pytest.raises(ConfigError, match=r"key 'overrides' has value \['lr'\]; allowed: epochs, data_path"):
        load_config(EXAMPLE, {"lr": 1.0})


BAD = [
    (lambda d: d["quantization"]["weight"].update(bitwidth=9),
     "key 'quantization.weight.bitwidth' has value 9; allowed: an integer from 2 to 8"),
    (lambda d: d["quantization"]["bias"].update(bitwidth=4),
     "key 'quantization.bias.bitwidth' has value 4; allowed: an integer from 8 to 32"),
    (lambda d: d["quantization"]["bias"].update(symmetric=False),
     "key 'quantization.bias.symmetric' has value False; allowed: true (a bias is a signed integer"),
    (lambda d: d["quantization"]["input"].update(power_of_2="yes"),
     "key 'quantization.input.power_of_2' has value 'yes'; allowed: true or false"),
    (lambda d: d["quantization"]["output"].update(bits=8),
     "unknown key(s) ['quantization.output.bits']; allowed here: ['quantization.output.bitwidth', "),
    (lambda d: d["quantization"].update(scale_rounding="floor"),
     "key 'quantization.scale_rounding' has value 'floor'; allowed: one of ['round', 'ceil']"),
    (lambda d: d["model"].update(name="resnet9000"),
     "key 'model.name' has value 'resnet9000'; allowed: a registered model (quantlib.zoo.ARCHITECTURES): ["),
    (lambda d: d["model"].update(weights="/no/such/weights.pt"),
     "key 'model.weights' has value '/no/such/weights.pt'; allowed: an existing file"),
    (lambda d: d["data"].update(dataset="cifar10"),
     "key 'data.path' has value None; allowed: a cifar-10-batches-py folder (data set cifar10 is read from a path; "
     "or give --data-path)"),
    (lambda d: d["data"].update(path="/tmp"), "key 'data.path' has value '/tmp'; allowed: nothing: data set digits "
                                              "is bundled"),
    (lambda d: d["training"].update(criterion="MSELoss"),
     "key 'training.criterion' has value 'MSELoss'; allowed: a registered criterion (quantlib.training.CRITERIA): "
     "['crossentropyloss']"),
    (lambda d: d["training"]["optimizer"].update(type="Lion"),
     "training.optimizer.type='Lion' is not allowed: training.optimizer.type must be one of the optimisers ['adam', "
     "'adamw', 'sgd'] (register another in quantlib.training.OPTIMISERS)."),
    (lambda d: d["training"]["scheduler"].update(type="OneCycleLR"),
     "training.scheduler.type='OneCycleLR' is not allowed: training.scheduler.type must be one of the schedulers ["),
    (lambda d: d["training"]["scheduler"].update(type=None),
     "training.scheduler.type=None is not allowed: training.scheduler.type must be one of the schedulers ["),
    (lambda d: d["training"]["scheduler"].update(gamma=2),
     "training.scheduler.gamma=2 is not allowed: training.scheduler.gamma must be a number in (0, 1]."),
    (lambda d: d["training"].update(learning_rate=-1),
     "training.learning_rate=-1 is not allowed: training.learning_rate must be a number > 0."),
    (lambda d: d["training"].update(validation_split=1.0),
     "key 'training.validation_split' has value 1.0; allowed: a fraction from 0"),
    (lambda d: d["training"].update(batch_size=0), "key 'training.batch_size' has value 0; allowed: an integer >= 1"),
    (lambda d: d["ptq"].update(calibration_batches=-1),
     "key 'ptq.calibration_batches' has value -1; allowed: an integer >= 1"),
    (lambda d: d.update(qat={}), "unknown key(s) ['qat']; allowed here: ['data', 'model', 'ptq', 'quantization', "),
]


@pytest.mark.parametrize(("edit", "message"), BAD)
def test_bad_keys_and_values_are_refused_naming_file_key_value_and_what_is_allowed(edit, message, edited_yaml):
    path = edited_yaml(EXAMPLE, edit)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_an_unreadable_file_is_named():
    with pytest.raises(ConfigError, match=r"Cannot read configuration '/no/such.yaml'"):
        load_config("/no/such.yaml")


def test_a_registered_model_and_data_set_are_named_in_the_config_and_used(edited_yaml, monkeypatch):
    monkeypatch.setattr(ARCHITECTURES, "_items", dict(ARCHITECTURES._items))  # registered for this test only
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))
    loaded = []
    ARCHITECTURES.register("narrow_digits", lambda num_classes, width: digits_cnn(num_classes, width))
    DATASETS.register("my_digits", Dataset(lambda path, batch_size: loaded.append(batch_size)
                                           or data_source("digits", batch_size)))
    path = edited_yaml(EXAMPLE, lambda d: (d["model"].update(name="Narrow_Digits", kwargs={"width": 4},
                                                        pretrain={"epochs": 1}),
                                      d["data"].update(dataset="my_digits"), d["training"].update(batch_size=32)))
    config = load_config(path, {"epochs": 0, "max_eval_batches": 1, "progress": False})
    assert (config.model, config.model_kwargs, config.dataset) == ("Narrow_Digits", {"width": 4}, "my_digits")
    result = run(config)
    assert loaded == [32] and result.float_model.features[0].out_channels == 4
    assert result.model.gm.get_submodule("features.0").weight.shape[0] == 4


def test_hold_out_splits_the_training_set_disjointly_and_reproducibly():
    train = data_source("digits", batch_size=64).train
    rest, validation = hold_out(train, 0.1, seed=3)
    assert (len(rest.dataset), len(validation.dataset)) == (len(train.dataset) - 144, 144)
    assert set(rest.dataset.indices).isdisjoint(validation.dataset.indices)
    assert hold_out(train, 0.1, seed=3)[1].dataset.indices == validation.dataset.indices
    assert hold_out(train, 0.1, seed=4)[1].dataset.indices != validation.dataset.indices
    with pytest.raises(ValueError, match="leaves 0 to validate on"):
        hold_out(train, 1e-6)
