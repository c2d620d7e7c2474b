"""Cluster affine correction recovers known affine distortions of logits; the logits files follow the design note's
layout and read back to the values written."""

import numpy as np
import pytest

from quantlib.ptq.logit_correction import ClusterAffineCorrection
from quantlib.ptq.logits_analysis import results_folder, save_logits


def test_one_affine_distortion_is_recovered_exactly():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(500, 10))
    m, b = np.eye(10) + 0.3 * rng.normal(size=(10, 10)), rng.normal(size=10)
    quantised = full @ m + b
    correction = ClusterAffineCorrection(num_clusters=4, pca_dim=5, alpha=1.0).fit(quantised, full)
    np.testing.assert_allclose(correction.apply(quantised), full, atol=1e-8)
    half = ClusterAffineCorrection(num_clusters=4, pca_dim=5, alpha=0.5).fit(quantised, full)
    np.testing.assert_allclose(half.apply(quantised), 0.5 * full + 0.5 * quantised, atol=1e-8)


def test_a_different_distortion_per_cluster_is_recovered_per_cluster():
    rng = np.random.default_rng(1)
    centres = np.array([[8.0] + [0.0] * 5, [-8.0] + [0.0] * 5])
    side = np.repeat([0, 1], 300)
    full = centres[side] + rng.normal(size=(600, 6))
    maps = [(np.eye(6) * 0.5, 1.0), (np.eye(6) * 2.0, -3.0)]
    quantised = np.stack([full[i] @ maps[s][0] + maps[s][1] for i, s in enumerate(side)])
    one = ClusterAffineCorrection(num_clusters=1, pca_dim=6, alpha=1.0).fit(quantised, full)
    two = ClusterAffineCorrection(num_clusters=2, pca_dim=6, alpha=1.0).fit(quantised, full)
    assert np.abs(two.apply(quantised) - full).max() < 1e-8
    assert np.abs(one.apply(quantised) - full).mean() > 0.1
    fresh = centres[side[:10]] + rng.normal(size=(10, 6))
    unseen = np.stack([fresh[i] @ maps[s][0] + maps[s][1] for i, s in enumerate(side[:10])])
    np.testing.assert_allclose(two.apply(unseen), fresh, atol=1e-8)


def test_small_clusters_get_a_shift_and_bad_input_is_refused():
    rng = np.random.default_rng(2)
    full = rng.normal(size=(12, 10))
    correction = ClusterAffineCorrection(num_clusters=6, pca_dim=3, alpha=1.0).fit(full + 0.25, full)
    np.testing.assert_allclose(correction.apply(full + 0.25), full, atol=1e-8)  # every cluster < 11 samples
    with pytest.raises(ValueError, match=r"same shape, got \(12, 10\) and \(12, 9\)"):
        correction.fit(full, full[:, :9])
    with pytest.raises(ValueError, match="before fit"):
        ClusterAffineCorrection().apply(full)
    with pytest.raises(ValueError, match=r"alpha=1.5 must be in \[0, 1\]"):
        ClusterAffineCorrection(alpha=1.5)


def test_logits_files_follow_the_layout_and_read_back(tmp_path):
    rng = np.random.default_rng(3)
    logits = {kind: rng.normal(size=(25, 4)).astype(np.float32) for kind in ("quantized", "fullprecision", "corrected")}
    labels = rng.integers(0, 4, size=25)
    folder = results_folder(tmp_path, "resnet18", 4, 4, 0.5, 64, 50)
    assert folder.name == "results_alpha0.5_clusters64_pca50_resnet18_w4bit_a4bit"
    files = save_logits(folder, "resnet18", 4, 4, 7, logits, labels, chunk_rows=10)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"logits_resnet18_w4bit_a4bit_seed7_{k}.csv" for k in ("quantized", "fullprecision", "corrected", "metadata"))
    assert files[0].read_text().splitlines()[0] == "logit_0,logit_1,logit_2,logit_3"
    back = np.loadtxt(files[0], delimiter=",", skiprows=1)
    np.testing.assert_allclose(back, logits["quantized"], rtol=1e-6)
    meta = np.loadtxt(files[-1], delimiter=",", skiprows=1, dtype=int)
    assert meta.shape == (25, 5) and (meta[:, 1] == labels).all()
    assert (meta[:, 2] == logits["quantized"].argmax(axis=1)).all()
    with pytest.raises(ValueError, match=r"Logit kinds \['raw'\] are not allowed"):
        save_logits(folder, "resnet18", 4, 4, 7, {"raw": logits["quantized"]}, labels)
