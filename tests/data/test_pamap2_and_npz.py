"""PAMAP2 Protocol files and .npz arrays: columns, gaps, transient rows, windows, training-only normalisation and
the leave-subjects-out split, against tiny fake files in the real formats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from quantlib.data import DataError, data_source
from quantlib.data.npz import load_npz
from quantlib.data.pamap2 import ACTIVITIES, CHANNELS, load_pamap2, read_subject, windows


def test_a_subject_file_keeps_40_valid_channels_fills_gaps_and_drops_transient_rows(tmp_path,
                                                                                    write_fake_pamap2_subject):
    table = write_fake_pamap2_subject(tmp_path / "subject101.dat", [0, 1, 4], 30, seed=0)
    samples, activity = read_subject(tmp_path / "subject101.dat")
    assert samples.shape == (90, 40) and activity.tolist() == [0] * 30 + [1] * 30 + [4] * 30
    assert len(CHANNELS) == 40 and 2 in CHANNELS and not {16, 17, 18, 19} & set(CHANNELS)  # hand orientation out
    # heart rate carried forward from the last measured row (every 10th)
    np.testing.assert_allclose(samples[:, 0], table[np.arange(90) // 10 * 10, 2], rtol=1e-6)
    assert not np.isnan(samples).any()
    x, y = windows(samples, activity, 10, 10)  # the transient rows give no window
    assert len(x) == 6 and y.tolist() == [ACTIVITIES.index(1)] * 3 + [ACTIVITIES.index(4)] * 3


def test_a_window_never_spans_a_transient_stretch_between_two_runs_of_one_activity():
    samples = np.arange(12, dtype=np.float32)[:, None].repeat(40, axis=1)
    activity = np.array([1] * 4 + [0] * 4 + [1] * 4)
    x, _ = windows(samples, activity, 4, 2)
    assert [row[0].tolist() for row in x] == [[0, 1, 2, 3], [8, 9, 10, 11]]


def test_windows_stay_in_one_activity_and_normalisation_uses_training_subjects_only(tmp_path,
                                                                                   write_fake_pamap2_subject):
    (tmp_path / "Protocol").mkdir()
    write_fake_pamap2_subject(tmp_path / "Protocol" / "subject101.dat", [1, 2], 40, seed=1)
    write_fake_pamap2_subject(tmp_path / "Protocol" / "subject102.dat", [4, 24], 40, seed=2)
    write_fake_pamap2_subject(tmp_path / "Protocol" / "subject105.dat", [1, 24], 40, seed=3, offset=100.0)
    train, test = load_pamap2(tmp_path, test_subjects=(105,), window=16, stride=8)
    x, y = train.tensors
    assert x.shape == (16, 40, 16)  # 4 runs of 40 rows: windows at 0, 8, 16, 24 each; none crosses a run
    assert sorted(set(y.tolist())) == [ACTIVITIES.index(a) for a in (1, 2, 4, 24)]
    torch.testing.assert_close(x.mean(dim=(0, 2)), torch.zeros(40), atol=0.15, rtol=0)  # training stats
    assert float(test.tensors[0].mean()) > 20  # the test subject's offset of 100 is not normalised away
    with pytest.raises(DataError, match=r"subjects \[101, 102, 105\]; test subjects \[107\] must be among them"):
        load_pamap2(tmp_path, test_subjects=(107,))
    with pytest.raises(DataError, match="the training subjects give no window of 512 samples of one activity"):
        data_source(f"pamap2:{tmp_path}", batch_size=8)  # the spec's windows are 512 samples (5.12 s)


def test_bad_pamap2_files_are_refused_naming_the_file(tmp_path):
    np.savetxt(tmp_path / "subject101.dat", np.ones((3, 50)))
    with pytest.raises(DataError, match="subject101.dat' has 50 columns per row; the Protocol files have 54"):
        read_subject(tmp_path / "subject101.dat")
    table = np.ones((3, 54))
    table[:, 1] = 9
    np.savetxt(tmp_path / "subject102.dat", table)
    with pytest.raises(DataError, match=r"subject102.dat' has activity ids \[9\]"):
        read_subject(tmp_path / "subject102.dat")
    with pytest.raises(DataError, match="has no Protocol/subject10X.dat files"):
        load_pamap2(tmp_path / "empty")


def test_npz_arrays_split_by_a_seed_or_as_given(tmp_path):
    x = np.arange(10 * 3 * 4, dtype=np.float32).reshape(10, 3, 4)
    y = np.arange(10) % 3
    np.savez(tmp_path / "one.npz", x=x, y=y)
    train, test = load_npz(tmp_path / "one.npz", test_fraction=0.2, seed=0)
    assert len(train) == 8 and len(test) == 2
    together = torch.cat([train.tensors[1], test.tensors[1]]).sort().values
    assert together.tolist() == sorted(y.tolist())
    np.savez(tmp_path / "two.npz", x_train=x[:6], y_train=y[:6], x_test=x[6:], y_test=y[6:])
    train, test = load_npz(tmp_path / "two.npz")
    assert torch.equal(test.tensors[0], torch.from_numpy(x[6:]))
    np.savez(tmp_path / "bad.npz", x=x, y=y.astype(np.float32))
    with pytest.raises(DataError, match="y must hold class indices"):
        load_npz(tmp_path / "bad.npz")
    np.save(tmp_path / "one.npy", x)
    with pytest.raises(DataError, match="holds one array \\(a .npy file\\), not named arrays"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "single.npz", x=x[:1], y=y[:1])
    with pytest.raises(DataError, match="x has 1 sample\\(s\\); a split into training and test needs 2"):
        load_npz(tmp_path / "single.npz")
    np.savez(tmp_path / "wrong.npz", inputs=x)
    with pytest.raises(DataError, match=r"holds arrays \['inputs'\]; give 'x' and 'y'"):
        load_npz(tmp_path / "wrong.npz")
