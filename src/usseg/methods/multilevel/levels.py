"""The three levels of the framework: binary foreground masks on the patch grid.

Each level clusters patch features over a different set of images — the whole split
(dataset), the images of one pseudo-category (category), one image (image) — and
decides per clustering which clusters are foreground (polarity). A level returns its
mask (N x gh x gw, 1 = foreground) and ``units``: per image, the id of the clustering
that decided its polarity, which is what the consistency step re-aligns.

The dataset and category levels never hold all patches in memory: centroids are fitted
on a per-image subsample, then every patch is assigned by streaming image chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import xarray as xr
from tqdm import tqdm

from usseg.errors import UssegError
from usseg.methods.multilevel.clustering import assign, evidence, fit_kmeans, l2_normalize, polarity
from usseg.methods.multilevel.params import (
    CategoryLevelParams,
    DatasetLevelParams,
    FittedLevel,
    ImageLevelParams,
)

# Images read from the store at a time when streaming (bounds memory, not results).
CHUNK = 32


@dataclass
class LevelResult:
    """A level's binary patch mask plus what is needed to audit and re-align it."""

    mask: np.ndarray  # N x gh x gw uint8, 1 = foreground
    units: np.ndarray  # N int: which clustering each image belongs to
    info: dict[str, Any] = field(default_factory=dict)


def grid_of(features: xr.Dataset) -> tuple[int, int]:
    return int(features.sizes["y"]), int(features.sizes["x"])


def read_patches(features: xr.Dataset, idx: Sequence[int] | slice, normalize: bool) -> np.ndarray:
    """Patch features of some images as float32 (n x gh x gw x C)."""
    patch = features["patch"].isel(image=idx).values.astype(np.float32)
    return l2_normalize(patch) if normalize else patch


def read_evidence(features: xr.Dataset, idx: Sequence[int] | slice, rule: str) -> np.ndarray:
    attn = features["attn"].isel(image=idx).values if rule == "attention" else None
    n = len(features["image"].isel(image=idx))
    return evidence(rule, n, grid_of(features), attn)


def chunks(indices: np.ndarray, size: int = CHUNK) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def fit_sample(
    features: xr.Dataset, indices: np.ndarray, max_points: int, normalize: bool, rng: np.random.Generator
) -> np.ndarray:
    """An even per-image subsample of at most ``max_points`` patches of ``indices``, filled in place."""
    gh, gw = grid_of(features)
    per_image = int(min(gh * gw, max(1, max_points // max(len(indices), 1))))
    out = np.empty((len(indices) * per_image, features.sizes["channel"]), dtype=np.float32)
    row = 0
    for chunk in chunks(indices):
        patches = read_patches(features, chunk, normalize).reshape(len(chunk), gh * gw, -1)
        picks = np.stack([rng.choice(gh * gw, per_image, replace=False) for _ in chunk])
        taken = np.take_along_axis(patches, picks[:, :, None], axis=1).reshape(-1, patches.shape[-1])
        out[row : row + len(taken)] = taken
        row += len(taken)
    return out


def cluster_split(
    features: xr.Dataset,
    indices: np.ndarray,
    k: int,
    cfg: FittedLevel,
    rule: str,
    rng: np.random.Generator,
    desc: str | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Fit k-means on a subsample of ``indices``' patches, assign all, decide polarity.

    Returns the binary mask of those images (n x gh x gw) and the polarity statistics;
    ``desc`` None draws no progress bar (the caller has its own).
    """
    sample = fit_sample(features, indices, cfg.max_fit_patches, cfg.normalize, rng)
    centroids = fit_kmeans(sample, k, niter=cfg.niter, nredo=cfg.nredo, seed=cfg.seed)
    k = len(centroids)
    labels = np.empty((len(indices), *grid_of(features)), dtype=np.int32)
    sums, counts, row = np.zeros(k), np.zeros(k), 0
    for chunk in tqdm(chunks(indices), desc=desc, unit="chunk", leave=False, disable=desc is None):
        lab = assign(read_patches(features, chunk, cfg.normalize), centroids)
        ev = read_evidence(features, chunk, rule)
        sums += np.bincount(lab.ravel(), weights=ev.ravel(), minlength=k)
        counts += np.bincount(lab.ravel(), minlength=k)
        labels[row : row + len(chunk)] = lab
        row += len(chunk)
    fg = polarity(sums, counts)
    mask = fg[labels].astype(np.uint8)
    stats = {
        "cluster_sizes": counts.astype(int).tolist(),
        "cluster_evidence": (sums / np.maximum(counts, 1)).round(6).tolist(),
        "foreground_clusters": np.flatnonzero(fg).tolist(),
    }
    return mask, stats


def dataset_level(features: xr.Dataset, cfg: DatasetLevelParams) -> LevelResult:
    """k-means (k = ``dataset.k``) over the patches of the whole split."""
    level = cfg.dataset
    rng = np.random.default_rng(cfg.seed)
    n = features.sizes["image"]
    mask, stats = cluster_split(features, np.arange(n), level.k, cfg, level.polarity, rng, "dataset level")
    return LevelResult(mask, np.zeros(n, dtype=np.int64), {"polarity": level.polarity, **stats})


def pseudo_categories(cls: np.ndarray, k: int, cfg: CategoryLevelParams) -> np.ndarray:
    """Pseudo-category of every image: k-means of the L2-normalised CLS tokens."""
    x = l2_normalize(cls)
    centroids = fit_kmeans(x, min(k, len(x)), niter=cfg.niter, nredo=cfg.nredo, seed=cfg.seed)
    return assign(x, centroids)


def category_level(features: xr.Dataset, cfg: CategoryLevelParams, num_foreground: int) -> LevelResult:
    """Pseudo-categories from CLS tokens, then k=2 inside each on its images' patches."""
    level = cfg.category
    k_cat = level.categories or num_foreground
    if k_cat < 1:
        raise UssegError(f"multilevel.category.categories: need at least 1 pseudo-category, got {k_cat}")
    categories = pseudo_categories(features["cls"].values.astype(np.float32), k_cat, cfg)
    rng = np.random.default_rng(cfg.seed)
    mask = np.zeros((features.sizes["image"], *grid_of(features)), dtype=np.uint8)
    per_category = {}
    for c in tqdm(np.unique(categories), desc="category level", unit="category"):
        members = np.flatnonzero(categories == c)
        sub, stats = cluster_split(features, members, 2, cfg, level.polarity, rng, None)
        mask[members] = sub
        per_category[str(int(c))] = {"images": len(members), **stats}
    info = {"polarity": level.polarity, "categories": len(per_category), "per_category": per_category}
    return LevelResult(mask, categories.astype(np.int64), info)


def image_level(features: xr.Dataset, cfg: ImageLevelParams) -> LevelResult:
    """k=2 on each image's own patches, polarity decided inside the image."""
    level = cfg.image
    n, (gh, gw) = features.sizes["image"], grid_of(features)
    mask = np.zeros((n, gh, gw), dtype=np.uint8)
    indices = np.arange(n)
    for chunk in tqdm(chunks(indices), desc="image level", unit="chunk"):
        patches = read_patches(features, chunk, cfg.normalize)
        ev = read_evidence(features, chunk, level.polarity)
        for j, i in enumerate(chunk):
            x = patches[j].reshape(gh * gw, -1)
            centroids = fit_kmeans(x, 2, niter=cfg.niter, nredo=cfg.nredo, seed=cfg.seed)
            lab = assign(x, centroids)
            k = len(centroids)
            fg = polarity(np.bincount(lab, weights=ev[j].ravel(), minlength=k), np.bincount(lab, minlength=k))
            mask[i] = fg[lab].reshape(gh, gw)
    return LevelResult(mask, indices.astype(np.int64), {"polarity": level.polarity})
