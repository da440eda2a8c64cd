"""k-means over patch features streamed from a feature store, shared by the branches.

Fitting uses a seeded per-image subsample (bounded memory whatever the split size);
assignment then streams every image through the fitted centroids.
"""

from __future__ import annotations

from collections.abc import Iterator

import faiss
import numpy as np
import xarray as xr

from usseg.errors import UssegError


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-8)


def image_patches(features: xr.Dataset, normalize: bool) -> Iterator[np.ndarray]:
    """Each image's patch vectors as a float32 (gh*gw) x D array, one image read at a time."""
    for i in range(features.sizes["image"]):
        x = features["patch"].isel(image=i).values.astype(np.float32)
        x = x.reshape(-1, x.shape[-1])
        yield l2_normalize(x) if normalize else x


def fit_sample(features: xr.Dataset, max_points: int, seed: int, normalize: bool) -> np.ndarray:
    """A seeded uniform subsample of patches, the same number from every image.

    Filled into one preallocated array: peak memory is the sample, not twice the sample.
    """
    n = features.sizes["image"]
    per_image = features.sizes["y"] * features.sizes["x"]
    take = min(per_image, max(1, max_points // n))
    rng = np.random.default_rng(seed)
    out = np.empty((n * take, features.sizes["channel"]), dtype=np.float32)
    for i, x in enumerate(image_patches(features, normalize)):
        idx = np.sort(rng.choice(per_image, size=take, replace=False)) if take < per_image else slice(None)
        out[i * take : (i + 1) * take] = x[idx]
    return out


def fit_kmeans(x: np.ndarray, k: int, niter: int, nredo: int, seed: int, spherical: bool) -> faiss.Kmeans:
    if len(x) < k:
        raise UssegError(f"k-means with k={k} needs at least {k} points, got {len(x)}")
    km = faiss.Kmeans(
        x.shape[1], k, niter=niter, nredo=nredo, seed=seed, spherical=spherical, verbose=False,
        max_points_per_centroid=max(256, len(x) // k + 1),
    )
    km.train(np.ascontiguousarray(x, dtype=np.float32))
    return km


def assign(km: faiss.Kmeans, x: np.ndarray) -> np.ndarray:
    _, labels = km.index.search(np.ascontiguousarray(x, dtype=np.float32), 1)
    return labels[:, 0]
