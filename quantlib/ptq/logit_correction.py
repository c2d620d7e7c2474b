"""Cluster affine correction of logits: the quantised model's logits are mapped back towards the float model's by
one least-squares affine map per cluster of similar logits.

Fit on calibration data: PCA of the quantised logits to ``pca_dim`` dimensions, k-means into ``num_clusters``
clusters in that space, then per cluster the affine map ``[q, 1] @ A`` that best gives the float logits in least
squares (a cluster with fewer samples than logits + 1 gets only a shift, the mean of float - quantised, since its
full map would be underdetermined). Apply: each sample takes its nearest cluster's map,
``corrected = alpha * affine(q) + (1 - alpha) * q``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA


@dataclass
class ClusterAffineCorrection:
    """``num_clusters`` clusters in a ``pca_dim``-dimensional PCA space (both cut to what the data allows);
    ``alpha``: the blend of the corrected and the quantised logits."""

    num_clusters: int = 64
    pca_dim: int = 50
    alpha: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_clusters < 1 or self.pca_dim < 1:
            raise ValueError(f"num_clusters ({self.num_clusters}) and pca_dim ({self.pca_dim}) must be >= 1.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha={self.alpha} must be in [0, 1].")
        self.maps: np.ndarray | None = None

    def fit(self, quantised: np.ndarray, full_precision: np.ndarray) -> ClusterAffineCorrection:
        """Learn the clusters and their maps from paired logits (samples x classes)."""
        q, f = _as_logits(quantised), _as_logits(full_precision)
        if q.shape != f.shape:
            raise ValueError(f"Quantised and float logits must have the same shape, got {q.shape} and {f.shape}.")
        n, classes = q.shape
        self.pca = PCA(n_components=min(self.pca_dim, classes, n), random_state=self.seed).fit(q)
        self.kmeans = KMeans(n_clusters=min(self.num_clusters, n), n_init=10, random_state=self.seed)
        labels = self.kmeans.fit_predict(self.pca.transform(q))
        self.maps = np.zeros((self.kmeans.n_clusters, classes + 1, classes))
        for c in range(self.kmeans.n_clusters):
            qc, fc = q[labels == c], f[labels == c]
            if len(qc) >= classes + 1:
                self.maps[c] = np.linalg.lstsq(_with_ones(qc), fc, rcond=None)[0]
            else:
                self.maps[c, :classes] = np.eye(classes)
                self.maps[c, classes] = (fc - qc).mean(axis=0)
        return self

    def apply(self, quantised: np.ndarray) -> np.ndarray:
        """The corrected logits of ``quantised`` (samples x classes)."""
        if self.maps is None:
            raise ValueError("ClusterAffineCorrection.apply before fit: fit it on calibration logits first.")
        q = _as_logits(quantised)
        clusters = self.kmeans.predict(self.pca.transform(q))
        affine = np.einsum("nk,nkc->nc", _with_ones(q), self.maps[clusters])
        return self.alpha * affine + (1.0 - self.alpha) * q


def _as_logits(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"Logits must be a non-empty samples x classes array, got shape {x.shape}.")
    return x


def _with_ones(x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
