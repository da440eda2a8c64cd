"""Labelling: foreground regions -> CLS embeddings -> k-means over the split -> class ids.

The binary mask says where objects are, not what they are. Each connected foreground
region large enough to matter gets one embedding: by default the ViT's CLS token of the
region re-forwarded alone (its bounding box, outside pixels set to the ImageNet mean,
so they are zero after normalisation); alternatively the attention-weighted mean of the
cached patch features it covers (no re-forward). Embeddings of the whole split are
clustered into K = number of foreground classes; background is 0, cluster c is c + 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from usseg.errors import UssegError
from usseg.methods.multilevel.clustering import assign, fit_kmeans, l2_normalize

# uint8 ImageNet mean: these pixels become zero after the backbone's normalisation.
MEAN_RGB = np.asarray([124, 116, 104], dtype=np.uint8)


def regions(foreground: np.ndarray, min_area: float, connectivity: int) -> tuple[np.ndarray, int]:
    """Connected foreground components covering at least ``min_area`` of the image.

    Returns the component map (0 = none; smaller components are dropped, i.e. become
    background) and the number of kept components, numbered 1..n in scan order.
    """
    if connectivity not in (4, 8):
        raise UssegError(f"multilevel.label.connectivity must be 4 or 8, got {connectivity}")
    structure = ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)
    comp, n = ndimage.label(foreground.astype(bool), structure=structure)
    if n == 0:
        return comp.astype(np.int32), 0
    areas = np.bincount(comp.ravel(), minlength=n + 1)
    keep = areas >= min_area * foreground.size
    keep[0] = False
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1)
    return lut[comp], int(keep.sum())


def region_crops(image: np.ndarray, comp: np.ndarray, n: int, size: Sequence[int]) -> np.ndarray:
    """One image per region (n x H x W x 3 uint8): its box, outside pixels = mean, warped."""
    out = np.empty((n, int(size[0]), int(size[1]), 3), dtype=np.uint8)
    for r, box in enumerate(ndimage.find_objects(comp, max_label=n)):
        crop = np.where((comp[box] == r + 1)[..., None], image[box], MEAN_RGB)
        out[r] = np.asarray(Image.fromarray(crop).resize((int(size[1]), int(size[0])), Image.BICUBIC))
    return out


def patch_coverage(comp: np.ndarray, n: int, grid: tuple[int, int]) -> np.ndarray:
    """Fraction of each patch (of the warped grid) that each region covers: n x gh x gw."""
    h, w = comp.shape
    gh, gw = grid
    py = np.minimum(np.arange(h) * gh // h, gh - 1)
    px = np.minimum(np.arange(w) * gw // w, gw - 1)
    patch_id = (py[:, None] * gw + px[None, :]).ravel()
    counts = np.bincount(comp.ravel() * gh * gw + patch_id, minlength=(n + 1) * gh * gw)
    counts = counts.reshape(n + 1, gh * gw)
    pixels = np.maximum(counts.sum(0), 1)
    return (counts[1:] / pixels).reshape(n, gh, gw).astype(np.float32)


def attention_embeddings(comp: np.ndarray, n: int, patch: np.ndarray, attn: np.ndarray) -> np.ndarray:
    """Attention-weighted mean patch feature of each region (n x C).

    ``patch`` is gh x gw x C, ``attn`` heads x gh x gw (averaged over heads); a patch's
    weight is its attention times the fraction of it the region covers.
    """
    gh, gw, c = patch.shape
    weights = patch_coverage(comp, n, (gh, gw)) * attn.mean(0)[None]
    weights = weights.reshape(n, gh * gw)
    total = weights.sum(1, keepdims=True)
    flat = patch.reshape(gh * gw, c).astype(np.float32)
    return (weights @ flat) / np.maximum(total, 1e-12)


def cluster_regions(
    embeddings: np.ndarray, k: int, *, pca_dim: int | None, niter: int, nredo: int, seed: int
) -> np.ndarray:
    """Cluster id (0..k-1) of every region embedding: L2-normalise, optional PCA, k-means."""
    if len(embeddings) == 0:
        return np.zeros(0, dtype=np.int64)
    x = l2_normalize(embeddings)
    if pca_dim:
        x = pca(x, pca_dim)
    centroids = fit_kmeans(x, k, niter=niter, nredo=nredo, seed=seed)
    return assign(x, centroids)


def pca(x: np.ndarray, dim: int) -> np.ndarray:
    """Project onto the top ``dim`` principal components (capped by the data's rank)."""
    centred = x - x.mean(0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return np.ascontiguousarray(centred @ vt[: min(dim, len(vt))].T, dtype=np.float32)


def label_map(comp: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """uint8 label map: background 0, region r's pixels = its cluster + 1."""
    if clusters.size and clusters.max() + 1 > 254:
        raise UssegError(f"{clusters.max() + 1} label clusters do not fit a uint8 label map")
    lut = np.concatenate([[0], np.asarray(clusters, dtype=np.int64) + 1]).astype(np.uint8)
    return lut[comp]
