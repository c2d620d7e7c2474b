"""The CIFAR-100 reader on a fake cifar-100-python folder (pickled dicts with bytes keys, as released): shapes, fine
labels, normalisation with CIFAR-100's statistics, the shared augmentation, and clear errors."""

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from quantlib.data import CifarError, DataError, cifar100_loaders, data_source, load_cifar100
from quantlib.data.cifar100 import MEAN, STD
from quantlib.data.cifar_files import PadCropFlip


def write_fake_cifar100(folder: Path, n_train: int = 30, n_test: int = 10) -> Path:
    """``train`` and ``test`` files in the released layout; pixel 0 of the first training image is (10, 128, 250)."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, n)]
        if name == "train":
            data[0, [0, 1024, 2048]] = (10, 128, 250)  # channel-major rows: R plane, G plane, B plane
            fine[:3] = [0, 99, 42]
        content = {b"filenames": [f"img_{i}.png".encode() for i in range(n)], b"batch_label": name.encode(),
                   b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine], b"data": data}
        with open(folder / name, "wb") as f:
            pickle.dump(content, f, protocol=2)
    return folder


@pytest.fixture
def fake_cifar100(tmp_path) -> Path:
    return write_fake_cifar100(tmp_path / "cifar-100-python")


def test_reads_fine_labels_and_normalises_with_cifar100_statistics(fake_cifar100):
    train, test = load_cifar100(fake_cifar100)
    assert len(train) == 30 and len(test) == 10
    image, label = train[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert [int(train[i][1]) for i in range(3)] == [0, 99, 42]  # fine, not coarse, labels
    expected = [(10 / 255 - 0.5071) / 0.2673, (128 / 255 - 0.4865) / 0.2564, (250 / 255 - 0.4409) / 0.2762]
    assert image[:, 0, 0].tolist() == pytest.approx(expected, abs=1e-5)
    assert (MEAN, STD) == ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
    with open(fake_cifar100 / "test", "rb") as f:
        raw = pickle.load(f, encoding="bytes")[b"data"][3].reshape(3, 32, 32)
    want = (torch.from_numpy(raw).float() / 255 - torch.tensor(MEAN).reshape(3, 1, 1)) / torch.tensor(STD).reshape(
        3, 1, 1)
    assert torch.allclose(test[3][0], want)


def test_loaders_and_the_data_spec(fake_cifar100):
    train_loader, test_loader = cifar100_loaders(fake_cifar100, batch_size=8, seed=1)
    x, y = next(iter(train_loader))
    assert x.shape == (8, 3, 32, 32) and y.dtype == torch.int64
    assert isinstance(train_loader.dataset, PadCropFlip)  # the augmentation CIFAR-10 uses (cifar_files)
    assert len(test_loader.dataset) == 10
    source = data_source(f"cifar100:{fake_cifar100}", batch_size=16)
    assert source.input_shape == (3, 32, 32) and source.num_classes == 100
    assert [b.shape for b in source.calibration_batches(5)] == [(16, 3, 32, 32), (14, 3, 32, 32)]


def test_missing_folder_and_missing_file_say_what_is_expected(tmp_path, fake_cifar100):
    with pytest.raises(CifarError, match=re.escape(f"CIFAR-100 folder '{tmp_path / 'none'}' does not exist; pass "
                                                   f"the extracted cifar-100-python folder.")):
        load_cifar100(tmp_path / "none")
    (fake_cifar100 / "train").unlink()
    with pytest.raises(CifarError, match=re.escape(f"CIFAR-100 file '{fake_cifar100 / 'train'}' is missing; the "
                                                   f"folder must be the extracted cifar-100-python (train, test).")):
        load_cifar100(fake_cifar100)


def test_malformed_files(fake_cifar100):
    with open(fake_cifar100 / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4}, f)  # CIFAR-10's key, not fine_labels
    with pytest.raises(CifarError, match=r"CIFAR-100 file '.*test' has no 'data' / 'fine_labels' entries"):
        load_cifar100(fake_cifar100)
    with open(fake_cifar100 / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 1024), np.uint8), b"fine_labels": [0] * 4}, f)
    with pytest.raises(CifarError, match=r"holds data of shape \(4, 1024\) and 4 labels; expected \[N, 3072\]"):
        load_cifar100(fake_cifar100)
    with open(fake_cifar100 / "test", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [3, 100]}, f)
    with pytest.raises(CifarError, match=r"holds labels from 3 to 100; expected 0..99"):
        load_cifar100(fake_cifar100)
    (fake_cifar100 / "test").write_bytes(b"not a pickle")
    with pytest.raises(CifarError, match=r"CIFAR-100 file '.*test' is not a readable cifar-100-python file"):
        load_cifar100(fake_cifar100)


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_file_that_would_run_code_is_refused(fake_cifar100):
    with open(fake_cifar100 / "train", "wb") as f:
        pickle.dump({b"data": Exploit(), b"fine_labels": []}, f)
    with pytest.raises(CifarError, match=r"refusing to load posix.system: a CIFAR file holds numpy arrays only"):
        load_cifar100(fake_cifar100)


def test_errors_are_value_errors_which_the_command_lines_report_with_exit_code_2(tmp_path):
    assert issubclass(CifarError, DataError) and issubclass(DataError, ValueError)
    with pytest.raises(DataError, match=re.escape(f"CIFAR-100 folder '{tmp_path / 'bad'}' does not exist")):
        data_source(f"cifar100:{tmp_path / 'bad'}")
