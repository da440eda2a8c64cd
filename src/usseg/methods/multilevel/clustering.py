"""k-means and polarity: the two primitives every level of the framework is built from.

k-means is faiss's (seeded, so the same seed gives the same centroids); faiss's own
subsampling is switched off because the callers already choose which patches to fit on.
Polarity turns clusters into foreground/background by comparing each cluster's mean
"foregroundness" evidence with the mean over all the clustered patches.
"""

from __future__ import annotations

import numpy as np

from usseg.errors import UssegError


def l2_normalize(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unit vectors along ``axis`` (zero vectors stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def fit_kmeans(x: np.ndarray, k: int, *, niter: int, nredo: int, seed: int) -> np.ndarray:
    """Centroids (k x d) of ``x`` (n x d); k is capped at the number of points."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or len(x) == 0:
        raise UssegError(f"k-means needs a non-empty n x d array, got shape {x.shape}")
    k = min(k, len(x))
    km = faiss.Kmeans(
        x.shape[1],
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        verbose=False,
        min_points_per_centroid=1,
        max_points_per_centroid=max(len(x), 1),
    )
    km.train(x)
    return np.asarray(km.centroids, dtype=np.float32)


def assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid (squared L2) for every row of ``x`` (... x d)."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float32, copy=False)
    dist = (centroids * centroids).sum(1)[None, :] - 2.0 * flat @ centroids.T
    return dist.argmin(1).reshape(x.shape[:-1])


def border_grid(gh: int, gw: int) -> np.ndarray:
    """True for the patches that touch the image border."""
    grid = np.zeros((gh, gw), dtype=bool)
    grid[[0, -1], :] = True
    grid[:, [0, -1]] = True
    return grid


def evidence(rule: str, n: int, grid: tuple[int, int], attn: np.ndarray | None = None) -> np.ndarray:
    """Per-patch foregroundness (n x gh x gw): higher = more likely foreground.

    ``border``: 0 on border patches, 1 inside (objects rarely fill the frame's edge).
    ``attention``: the CLS-to-patch attention, averaged over heads and divided by its
    image mean, so images with peaky and flat attention weigh alike.
    """
    if rule == "border":
        return np.broadcast_to(~border_grid(*grid), (n, *grid)).astype(np.float32)
    if rule == "attention":
        if attn is None:
            raise UssegError("polarity rule 'attention' needs the store's attn array")
        mean = np.asarray(attn, dtype=np.float32).mean(axis=1)
        return mean / np.maximum(mean.mean(axis=(1, 2), keepdims=True), 1e-12)
    raise UssegError(f"unknown polarity rule {rule!r} (known: border, attention)")


def polarity(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Which clusters are foreground, from per-cluster evidence sums and patch counts.

    A cluster is foreground when its mean evidence is above the mean over all patches.
    The most foreground-looking cluster is always foreground and the least one always
    background, so every clustering yields both (ties keep the lower index background).
    """
    sums = np.asarray(sums, dtype=np.float64)
    counts = np.asarray(counts, dtype=np.float64)
    overall = sums.sum() / max(counts.sum(), 1.0)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1.0), -np.inf)
    fg = mean > overall
    order = np.argsort(mean, kind="stable")
    fg[order[0]] = False
    if len(order) > 1:
        fg[order[-1]] = True
    return fg
