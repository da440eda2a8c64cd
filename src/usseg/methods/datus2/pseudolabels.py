"""Step 3 of DatUS²: dataset-level pseudo-labels of the segments.

Official code (seg_pseudoLabeling.py): PCA keeping every component, then mini-batch
k-means, 50 epochs of ``partial_fit`` over shuffled batches of max(2048, 2^ceil(log2 K))
segments. The official code initialises randomly; the authors' review response says
k-means++ was used for the revised paper, hence the default here. Seeded throughout, so
the same inputs and seed give the same labels.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.cluster import MiniBatchKMeans
from sklearn.decomposition import PCA

INITS = ("k-means++", "random")


def project_pca(embeddings: np.ndarray) -> np.ndarray:
    """Centre and rotate onto every principal component (distances are unchanged up to
    dropped null directions; kept because the official code does it)."""
    return PCA(n_components=None, svd_solver="full").fit_transform(embeddings)


def kmeans_batch_size(k: int, batch_size: int) -> int:
    """The official batch size rule: at least ``batch_size`` and at least the next power of two >= K."""
    return max(batch_size, 2 ** math.ceil(math.log2(k)))


def fit_pseudolabels(
    embeddings: np.ndarray,
    k: int,
    *,
    init: str = "k-means++",
    epochs: int = 50,
    batch_size: int = 2048,
    seed: int = 0,
    pca: bool = True,
) -> np.ndarray:
    """Cluster id (0..k-1) per segment embedding (rows of ``embeddings``)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, not {init!r}")
    n = len(embeddings)
    if n < k:
        raise ValueError(f"{n} segments cannot form {k} clusters")
    x = np.asarray(embeddings, dtype=np.float64)
    if pca:
        x = project_pca(x)
    bs = kmeans_batch_size(k, batch_size)
    rng = np.random.default_rng(seed)
    kmeans = MiniBatchKMeans(
        n_clusters=k, batch_size=bs, init=init, max_no_improvement=None, random_state=seed, n_init=1
    )
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, bs):
            kmeans.partial_fit(x[order[start : start + bs]])  # the first batch has >= k rows
    return kmeans.predict(x).astype(np.int32)
