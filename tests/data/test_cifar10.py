"""The CIFAR-10 reader on a fake cifar-10-batches-py folder: shapes, normalisation, augmentation, and clear errors
for missing, malformed and malicious batch files."""

import os
import pickle

import numpy as np
import pytest
import torch

from quantlib.data import CifarError, cifar10_loaders, data_source, load_cifar10
from quantlib.data.cifar10 import MEAN, STD


def test_reads_the_standard_format_and_normalises(fake_cifar10):
    folder = fake_cifar10
    train, test = load_cifar10(folder)
    assert len(train) == 100 and len(test) == 20
    image, label = train[0]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 10
    with open(folder / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][0].reshape(3, 32, 32)
    expected = (torch.from_numpy(raw).float() / 255 - torch.tensor(MEAN).reshape(3, 1, 1)) / torch.tensor(
        STD).reshape(3, 1, 1)
    assert torch.allclose(image, expected)


def test_training_loader_crops_and_flips_within_the_padded_image(fake_cifar10):
    folder = fake_cifar10
    train_loader, test_loader = cifar10_loaders(folder, batch_size=10)
    x, y = next(iter(train_loader))
    assert x.shape == (10, 3, 32, 32) and y.shape == (10,)
    assert len(test_loader.dataset) == 20
    source = data_source(f"cifar10:{folder}")
    assert source.input_shape == (3, 32, 32) and source.num_classes == 10
    assert [b.shape[0] for b in source.calibration_batches(3)] == [64, 36]


def test_calibration_sees_the_training_images_without_augmentation(fake_cifar10):
    train, _ = load_cifar10(fake_cifar10)
    images = {tuple(image.flatten()[:64].tolist()) for image, _ in train}
    source = data_source(f"cifar10:{fake_cifar10}")
    calibration = torch.cat(source.calibration_batches(2))
    assert len(calibration) == 100
    assert all(tuple(image.flatten()[:64].tolist()) in images for image in calibration)  # no crop, pad or flip
    augmented = next(iter(source.train))[0]
    assert not all(tuple(image.flatten()[:64].tolist()) in images for image in augmented)


def test_missing_folder_and_missing_batch_name_the_path(tmp_path, fake_cifar10):
    with pytest.raises(CifarError, match=f"CIFAR-10 folder '{tmp_path / 'none'}' does not exist"):
        load_cifar10(tmp_path / "none")
    folder = fake_cifar10
    (folder / "data_batch_3").unlink()
    with pytest.raises(CifarError, match="CIFAR-10 batch '.*data_batch_3' is missing"):
        load_cifar10(folder)


def test_malformed_batch(fake_cifar10):
    folder = fake_cifar10
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 100), np.uint8), b"labels": [0] * 4}, f)
    with pytest.raises(CifarError, match=r"holds data of shape \(4, 100\) and 4 labels; expected \[N, 3072\]"):
        load_cifar10(folder)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_batch_that_would_run_code_is_refused(fake_cifar10):
    folder = fake_cifar10
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": Exploit(), b"labels": []}, f)
    with pytest.raises(CifarError, match=r"refusing to load posix.system"):
        load_cifar10(folder)
