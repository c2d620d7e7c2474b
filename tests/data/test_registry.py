"""Data sets and models are looked up by name in registries a user extends without editing quantlib."""

import pytest
import torch

from quantlib.data.sources import DATASETS, Dataset, DataSource, data_source
from quantlib.zoo import ARCHITECTURES


def test_a_registered_data_set_is_named_with_its_path(monkeypatch):
    monkeypatch.setattr(DATASETS, "_items", dict(DATASETS._items))  # registered for this test only
    batches = [(torch.ones(2, 3), torch.tensor([0, 1]))]
    DATASETS.register("Sensors", Dataset(lambda path, batch_size: DataSource(path, batches, None, (3,), 2),
                                         "a folder of sensor logs"))
    source = data_source("sensors:/logs/run1")
    assert (source.spec, source.train, source.num_classes) == ("/logs/run1", batches, 2)
    with pytest.raises(ValueError, match=r"'sensors:PATH' \(a folder of sensor logs\) or 'random:N'"):
        data_source("sensors")  # it needs its path


def test_digits_takes_no_path_and_models_are_found_regardless_of_case():
    with pytest.raises(ValueError, match=r"^Data 'digits:/tmp' is not one of 'digits', 'cifar10:PATH'"):
        data_source("digits:/tmp")
    assert ARCHITECTURES["Digits_CNN"](num_classes=4).classifier.out_features == 4
