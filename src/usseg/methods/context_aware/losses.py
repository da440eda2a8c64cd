"""Training losses: PiCIE's within- and cross-view cross-entropy, and PSG's cell terms.

Every loss takes L2-normalised embeddings and unit-norm centroids; logits are cosine
similarities over a temperature. Targets are argmax assignments taken without gradient,
as in PiCIE, so the network is pulled towards the current clustering, not the reverse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(z: torch.Tensor, centroids: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, D, h, w) unit embeddings x (K, D) centroids -> (B, K, h, w) logits."""
    return torch.einsum("bdhw,kd->bkhw", z, centroids.to(z.dtype)) / temperature


def picie_losses(logits1: torch.Tensor, logits2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(within, cross) for two aligned views' pixel logits (B, K, h, w).

    within: each view predicts its own assignment (the clustering is a training signal);
    cross: each view predicts the other's, which makes the embedding invariant to the
    photometric change and equivariant to the crop.
    """
    y1 = logits1.detach().argmax(1)
    y2 = logits2.detach().argmax(1)
    within = (F.cross_entropy(logits1, y1) + F.cross_entropy(logits2, y2)) / 2
    cross = (F.cross_entropy(logits1, y2) + F.cross_entropy(logits2, y1)) / 2
    return within, cross


def pool_cells(x: torch.Tensor, level: int) -> torch.Tensor:
    """Average-pool a (B, C, h, w) map into a level x level grid of cells."""
    return F.adaptive_avg_pool2d(x, level)


def cell_classification_loss(
    features: torch.Tensor, cell_centroids: torch.Tensor, labels: torch.Tensor, level: int, temperature: float
) -> torch.Tensor:
    """Cross-entropy of each pooled cell against its dataset-level cell pseudo-label.

    ``features``: (B, D, h, w) raw embeddings; ``labels``: (B, level, level) cell cluster ids.
    """
    cells = F.normalize(pool_cells(features, level), dim=1)
    return F.cross_entropy(cosine_logits(cells, cell_centroids, temperature), labels)


def cell_kl_loss(
    pixel_logits: torch.Tensor,
    pixel_centroids: torch.Tensor,
    cell_centroids: torch.Tensor,
    labels: torch.Tensor,
    level: int,
    target_temperature: float,
) -> torch.Tensor:
    """KL(target || mean pixel assignment) per cell, averaged over cells.

    A cell label lives in cell-cluster space; its centroid's softmax over the pixel
    centroids translates it into a distribution over pixel clusters (the target), so the
    term pulls the cell's mean pixel assignment toward what its cell label stands for;
    ``target_temperature`` sets how peaked that target is (a whole image is rarely one cluster).
    """
    mean_assign = pool_cells(pixel_logits.float().softmax(1), level).clamp_min(1e-8)  # (B, K, n, n)
    target = (cell_centroids[labels] @ pixel_centroids.T / target_temperature).softmax(-1)  # (B, n, n, K)
    target = target.permute(0, 3, 1, 2)
    kl = (target * (target.clamp_min(1e-8).log() - mean_assign.log())).sum(1)
    return kl.mean()
