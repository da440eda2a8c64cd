"""Step 1 of DSM: the eigenvectors of one image's Laplacian and its multi-region segments.

Official code (extract/extract.py, ``_extract_eig`` with ``which_matrix='laplacian'`` and
``_extract_multi_region_segmentations``): L2-normalised last-block keys, W_feat = max(0, k k^T)
divided by its maximum, plus ``colour_lambda`` x a KNN colour affinity of the image resized to
the patch grid; the generalised problem (D - W) v = l D v, its ``num_eigenvectors`` smallest
pairs, a sign fix, k-means of the non-constant eigenvectors into ``num_segments`` segments,
and the segment touching the border most as background (segment 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
from scipy.spatial import cKDTree
from sklearn.cluster import KMeans

# pymatting's knn_affinity settings in the official code: neighbours and the weight of (x, y)
KNN_NEIGHBOURS = (20, 10)
KNN_POSITION_WEIGHTS = (2.0, 0.1)


def knn_colour_affinity(image: np.ndarray) -> scipy.sparse.csr_matrix:
    """Symmetric KNN affinity of an (h, w, 3) image in [0, 1] on (r, g, b, a x, a y).

    As pymatting's ``knn_affinity``: each pixel links to its k nearest (itself included) for
    each (k, a); links found twice count twice. cKDTree is exact, as pymatting's kd-tree.
    """
    h, w = image.shape[:2]
    n = h * w
    rgb = image.reshape(n, 3).astype(np.float32)
    x = np.tile(np.linspace(0, 1, w, dtype=np.float32), h)
    y = np.repeat(np.linspace(0, 1, h, dtype=np.float32), w)
    rows, cols = [], []
    for k, weight in zip(KNN_NEIGHBOURS, KNN_POSITION_WEIGHTS, strict=True):
        k = min(k, n)
        points = np.column_stack([rgb, weight * x, weight * y])
        _, neighbours = cKDTree(points).query(points, k=k)
        rows.append(np.repeat(np.arange(n), k))
        cols.append(np.asarray(neighbours).reshape(-1))
    i, j = np.concatenate(rows + cols), np.concatenate(cols + rows)
    return scipy.sparse.csr_matrix((np.ones(len(i), np.float64), (i, j)), shape=(n, n))


def laplacian_eigenvectors(
    keys: np.ndarray, image: np.ndarray | None, count: int, colour_lambda: float
) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest (eigenvalue, eigenvector) pairs of the normalised Laplacian.

    ``keys``: (n, d) patch keys; ``image``: (gh, gw, 3) in [0, 1] (None: no colour term).
    Returns (count,) eigenvalues ascending and (count, n) eigenvectors, signs fixed so that a
    vector is positive on at most half the patches (as the official code).
    """
    feats = keys / np.maximum(np.linalg.norm(keys, axis=1, keepdims=True), 1e-12)
    w = np.maximum(feats @ feats.T, 0.0).astype(np.float64)
    w /= max(w.max(), 1e-12)
    if image is not None and colour_lambda > 0:
        w += colour_lambda * knn_colour_affinity(image).toarray()
    d = w.sum(axis=1)
    d[d < 1e-12] = 1.0  # pymatting's get_diagonal threshold
    count = min(count, len(w))
    values, vectors = scipy.linalg.eigh(np.diag(d) - w, np.diag(d), subset_by_index=[0, count - 1])
    vectors = vectors.T.copy()
    for k in range(count):
        if 0.5 < float(np.mean(vectors[k] > 0)) < 1.0:
            vectors[k] = -vectors[k]
    return values, vectors


def border_background(segmap: np.ndarray) -> int:
    """The segment with the most pixels on the image border (the official background rule)."""
    border = np.concatenate([segmap[:, 0], segmap[:, -1], segmap[0, :], segmap[-1, :]])
    ids, counts = np.unique(border, return_counts=True)
    return int(ids[np.argmax(counts)])


@dataclass(frozen=True)
class Regions:
    """One image's multi-region segmentation on the patch grid."""

    regions: np.ndarray  # (gh, gw) k-means segment ids, background 0 (the official segment map)
    eigenvalues: np.ndarray


def multi_region(
    keys: np.ndarray, image: np.ndarray | None, grid: tuple[int, int], *, num_eigenvectors: int,
    num_segments: int, colour_lambda: float, seed: int,
) -> Regions:  # fmt: skip
    """Segments of one image: k-means of its non-constant eigenvectors, background moved to 0."""
    values, vectors = laplacian_eigenvectors(keys, image, num_eigenvectors, colour_lambda)
    points = vectors[1:].T  # drop the constant eigenvector
    k = min(num_segments, len(np.unique(points, axis=0)))
    labels = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(points).reshape(grid)
    bg = border_background(labels)
    swapped = labels.copy()
    swapped[labels == bg], swapped[labels == 0] = 0, bg
    return Regions(swapped.astype(np.int32), values)


def foreground_segments(regions: np.ndarray) -> np.ndarray:
    """The non-background regions numbered 0..m-1 in id order, background -1 (the segments store)."""
    out = np.full(regions.shape, -1, np.int32)
    for new, old in enumerate(r for r in np.unique(regions) if r != 0):
        out[regions == old] = new
    return out
