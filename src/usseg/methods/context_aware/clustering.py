"""Per-epoch mini-batch k-means of pixel embeddings, and cluster statistics.

PiCIE's mini-batch k-means: faiss spherical k-means on the first ``init_batches``
batches, then every batch (those included) is assigned to those centroids and the
centroids are re-estimated from the running sums, so memory stays bounded by
``init_batches`` whatever the dataset size.
"""

from __future__ import annotations

import numpy as np

from usseg.errors import UssegError
from usseg.methods.clustering import assign, fit_kmeans, l2_normalize


class MiniBatchKMeans:
    """Streaming spherical k-means: ``add`` batches of L2-normalised rows, then ``finish``.

    The seeding sample is one array preallocated on the first batch (``init_batches``
    times its rows) and filled in place, so no list of batches is ever concatenated.
    """

    def __init__(self, k: int, niter: int, init_batches: int, seed: int) -> None:
        self.k, self.niter, self.init_batches, self.seed = k, niter, init_batches, seed
        self._buffer: np.ndarray | None = None
        self._filled = 0
        self._batches = 0
        self._km = None
        self._sums: np.ndarray | None = None
        self._counts = np.zeros(k, dtype=np.int64)

    def add(self, batch: np.ndarray) -> None:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._km is not None:
            self._accumulate(batch)
            return
        if self._buffer is None:
            self._buffer = np.empty((self.init_batches * len(batch), batch.shape[1]), dtype=np.float32)
        if self._filled + len(batch) > len(self._buffer):
            raise UssegError(
                f"clustering batch of {len(batch)} rows after smaller ones: batches must not grow"
            )
        self._buffer[self._filled : self._filled + len(batch)] = batch
        self._filled += len(batch)
        self._batches += 1
        if self._batches >= self.init_batches:
            self._initialise()

    def _initialise(self) -> None:
        x = self._buffer[: self._filled] if self._buffer is not None else np.zeros((0, 1), np.float32)
        if len(x) < self.k:
            raise UssegError(
                f"params context_aware.k={self.k}: the clustering pass gave only {len(x)} pixels "
                "(raise cluster_init_batches or image_size)"
            )
        self._km = fit_kmeans(x, self.k, self.niter, 1, self.seed, spherical=True)
        self._sums = np.zeros((self.k, x.shape[1]), dtype=np.float64)
        self._accumulate(x)
        self._buffer = None

    def _accumulate(self, batch: np.ndarray) -> None:
        labels = assign(self._km, batch)
        np.add.at(self._sums, labels, batch)
        self._counts += np.bincount(labels, minlength=self.k)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """(centroids k x d, unit norm; pixels per cluster k). Empty clusters keep their seed."""
        if self._km is None:
            self._initialise()
        centroids = self._km.centroids.astype(np.float64).copy()
        filled = self._counts > 0
        centroids[filled] = self._sums[filled]
        return l2_normalize(centroids).astype(np.float32), self._counts.copy()


def cluster_stats(counts: np.ndarray) -> dict[str, float]:
    """Cluster-size statistics: collapse shows as low normalised entropy / many empties."""
    total = max(int(counts.sum()), 1)
    p = counts / total
    nz = p[p > 0]
    entropy = float(-(nz * np.log(nz)).sum())
    return {
        "size_entropy": entropy / np.log(len(counts)) if len(counts) > 1 else 0.0,
        "empty_clusters": float((counts == 0).sum()),
        "largest_cluster": float(p.max()),
        "smallest_cluster": float(p.min()),
    }

