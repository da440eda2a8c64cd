"""Patch grid -> original image size: the inverse of the features stage's warp.

The features stage warps every image (aspect not kept) to a square ``image_size`` that
the gh x gw patch grid tiles exactly, so patch (i, j) covers the original pixels
[i H/gh, (i+1) H/gh) x [j W/gw, (j+1) W/gw) whatever H, W (non-square, not a multiple of
the patch size). Mapping back is therefore a plain resize of the grid to H x W with
pixel-centre sampling: bilinear with ``align_corners=False`` semantics for soft scores,
nearest (the patch containing the pixel centre) for hard labels. Pure numpy, so worker
processes never touch an OpenMP runtime.
"""

from __future__ import annotations

import numpy as np

from usseg.errors import UssegError


def _check(size: int, grid: int, what: str) -> None:
    if size < 1 or grid < 1:
        raise UssegError(f"upsample: {what} must be >= 1 (grid {grid}, image {size})")


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) interpolation weights, as torch's ``interpolate(align_corners=False)``."""
    _check(dst, src, "sizes")
    x = np.clip((np.arange(dst) + 0.5) * (src / dst) - 0.5, 0.0, src - 1)
    i0 = np.floor(x).astype(np.int64)
    i1 = np.minimum(i0 + 1, src - 1)
    frac = (x - i0).astype(np.float32)
    weights = np.zeros((dst, src), np.float32)
    rows = np.arange(dst)
    np.add.at(weights, (rows, i0), 1.0 - frac)
    np.add.at(weights, (rows, i1), frac)
    return weights


def nearest_index(src: int, dst: int) -> np.ndarray:
    """For each output pixel, the source cell containing its centre (exact integer maths)."""
    _check(dst, src, "sizes")
    return ((2 * np.arange(dst) + 1) * src) // (2 * dst)


def upsample_scores(scores: np.ndarray, height: int, width: int) -> np.ndarray:
    """(K, gh, gw) soft scores -> (K, height, width) float32, bilinear."""
    if scores.ndim != 3:
        raise UssegError(f"upsample_scores: expected (K, gh, gw), got shape {scores.shape}")
    _, gh, gw = scores.shape
    wy = bilinear_matrix(gh, height)
    wx = bilinear_matrix(gw, width)
    return np.matmul(np.matmul(wy, scores.astype(np.float32, copy=False)), wx.T)


def upsample_labels(labels: np.ndarray, height: int, width: int) -> np.ndarray:
    """(gh, gw) hard labels -> (height, width), nearest: ids (255 included) are kept as is."""
    if labels.ndim != 2:
        raise UssegError(f"upsample_labels: expected (gh, gw), got shape {labels.shape}")
    gh, gw = labels.shape
    return labels[np.ix_(nearest_index(gh, height), nearest_index(gw, width))]
