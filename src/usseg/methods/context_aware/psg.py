"""Pyramid Semantic Guidance: image- and patch-level pseudo labels guide pixel clustering.

Each epoch the un-augmented images' embeddings are average-pooled into 1x1, 2x2 and 4x4
cells; a k-means per pyramid level over the whole dataset turns the cells into pseudo
labels. Training then asks each cell of the (full-frame) first view to classify into its
label and its mean pixel assignment to agree with it (``losses.cell_*``), which keeps
holistic semantics in the pixel clusters and stops them collapsing onto one region.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from usseg.methods.clustering import assign, fit_kmeans, l2_normalize
from usseg.methods.context_aware.losses import cell_classification_loss, cell_kl_loss, pool_cells

log = logging.getLogger(__name__)


@dataclass
class PyramidTargets:
    """Per level: cell labels of every training image (N x n x n) and the cell centroids (Kc x D)."""

    labels: dict[int, torch.Tensor]
    centroids: dict[int, torch.Tensor]


def pooled_cells(features: torch.Tensor, levels: Sequence[int]) -> dict[int, np.ndarray]:
    """A batch's cell embeddings per level, (B, n, n, D) float32, for the dataset-level k-means."""
    return {n: pool_cells(features.float(), n).permute(0, 2, 3, 1).cpu().numpy() for n in levels}


def fit_targets(cells: Mapping[int, np.ndarray], k: int, niter: int, seed: int) -> PyramidTargets:
    """k-means per level over all images' cells (``cells[n]``: N x n x n x D) -> labels + centroids."""
    labels, centroids = {}, {}
    for n, x in cells.items():
        n_img, rows, cols, dim = x.shape
        flat = l2_normalize(x.reshape(-1, dim).astype(np.float32))
        k_eff = min(k, len(flat))
        if k_eff < k:
            log.warning("PSG level %dx%d: only %d cells for psg_k=%d; using k=%d", n, n, len(flat), k, k_eff)
        km = fit_kmeans(flat, k_eff, niter, 1, seed + n, spherical=True)
        labels[n] = torch.from_numpy(assign(km, flat).reshape(n_img, rows, cols).astype(np.int64))
        centroids[n] = torch.from_numpy(l2_normalize(km.centroids).astype(np.float32))
    return PyramidTargets(labels=labels, centroids=centroids)


def psg_losses(
    features: torch.Tensor,
    pixel_logits: torch.Tensor,
    pixel_centroids: torch.Tensor,
    targets: PyramidTargets,
    index: torch.Tensor,
    temperature: float,
    target_temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cell classification, KL) averaged over pyramid levels for the images ``index``.

    ``features`` (B, D, h, w) and ``pixel_logits`` (B, K, h, w) must be in the frame the
    targets were computed in (the full, un-cropped image).
    """
    cell, kl = [], []
    for n, all_labels in targets.labels.items():
        labels = all_labels[index].to(features.device)
        centroids = targets.centroids[n].to(features.device)
        cell.append(cell_classification_loss(features.float(), centroids, labels, n, temperature))
        kl.append(cell_kl_loss(pixel_logits, pixel_centroids, centroids, labels, n, target_temperature))
    return torch.stack(cell).mean(), torch.stack(kl).mean()
