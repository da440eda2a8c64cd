"""Pyramid Semantic Guidance: image- and patch-level pseudo labels guide pixel clustering.

Each epoch the un-augmented images' embeddings are average-pooled into 1x1, 2x2 and 4x4
cells; a k-means per pyramid level over the whole dataset turns the cells into pseudo
labels. Training then asks each cell of the (full-frame) first view to classify into its
label and its mean pixel assignment to agree with it (``losses.cell_*``), which keeps
holistic semantics in the pixel clusters and stops them collapsing onto one region.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from usseg.errors import UssegError
from usseg.methods.clustering import assign, fit_kmeans, l2_normalize
from usseg.methods.context_aware.losses import cell_classification_loss, cell_kl_loss, pool_cells

log = logging.getLogger(__name__)


@dataclass
class PyramidTargets:
    """Per level: cell labels of every training image (N x n x n, int16) and the cell centroids (Kc x D)."""

    labels: dict[int, torch.Tensor]
    centroids: dict[int, torch.Tensor]


def pooled_cells(features: torch.Tensor, levels: Sequence[int]) -> dict[int, np.ndarray]:
    """A batch's cell embeddings per level, (B, n, n, D) float32, for the dataset-level k-means."""
    return {n: pool_cells(features.float(), n).permute(0, 2, 3, 1).cpu().numpy() for n in levels}


class PyramidCells:
    """Every training image's cells per level, gathered over a clustering pass in bounded memory.

    All cells go to a temporary file (one fixed-size row per image, written at its index);
    only a seeded sample of ``fit_images`` images stays in memory, preallocated, for the
    k-means fit. The labels of every image are then assigned from the file in chunks, so
    memory depends on ``fit_images`` and ``chunk``, not on the split (the labels themselves,
    n x n int16 per image, are the one per-image array kept). With ``fit_images`` >= the split,
    the sample is every image in order: the fit is the same as on all cells.
    """

    def __init__(self, levels: Sequence[int], n_images: int, fit_images: int | None, seed: int,
                 chunk: int = 4096) -> None:  # fmt: skip
        self.levels, self.n_images, self.chunk = list(levels), n_images, chunk
        self.size = n_images if fit_images is None else min(int(fit_images), n_images)
        chosen = np.random.default_rng(seed).choice(n_images, size=self.size, replace=False)
        self.sample_of = np.full(n_images, -1, dtype=np.int64)  # image index -> row of the sample
        self.sample_of[np.sort(chosen)] = np.arange(self.size)
        self.sample: dict[int, np.ndarray] = {}
        self.files = {n: tempfile.TemporaryFile(prefix=f"psg-cells-{n}x{n}-") for n in self.levels}

    def add(self, index: np.ndarray, cells: Mapping[int, np.ndarray]) -> None:
        """Store a batch's cells (``cells[n]``: B x n x n x D) for the images ``index``."""
        rows = self.sample_of[index]
        for n, x in cells.items():
            x = np.ascontiguousarray(x, dtype=np.float32)
            if n not in self.sample:
                self.sample[n] = np.empty((self.size, *x.shape[1:]), np.float32)
            kept = rows >= 0
            self.sample[n][rows[kept]] = x[kept]
            fd, row_bytes = self.files[n].fileno(), x[0].nbytes
            for i, one in zip(index, x):
                os.pwrite(fd, one.tobytes(), int(i) * row_bytes)

    def _chunks(self, n: int) -> Iterator[np.ndarray]:
        shape = self.sample[n].shape[1:]
        row_bytes = int(np.prod(shape)) * 4
        fd = self.files[n].fileno()
        for start in range(0, self.n_images, self.chunk):
            count = min(self.chunk, self.n_images - start)
            data = os.pread(fd, count * row_bytes, start * row_bytes)
            if len(data) != count * row_bytes:
                raise UssegError(f"PSG level {n}x{n}: the clustering pass did not cover every image")
            yield np.frombuffer(data, dtype=np.float32).reshape(count, *shape)

    def fit(self, k: int, niter: int, seed: int) -> PyramidTargets:
        """k-means per level on the sample's cells -> every image's cell labels + centroids."""
        labels, centroids = {}, {}
        for n in self.levels:
            rows, cols, dim = self.sample[n].shape[1:]
            flat = l2_normalize(self.sample[n].reshape(-1, dim))
            k_eff = min(k, len(flat))
            if k_eff < k:
                log.warning("PSG level %dx%d: only %d cells for psg_k=%d; using k=%d",
                            n, n, len(flat), k, k_eff)
            km = fit_kmeans(flat, k_eff, niter, 1, seed + n, spherical=True)
            out = np.empty((self.n_images, rows, cols), dtype=np.int16)
            start = 0
            for part in self._chunks(n):
                found = assign(km, l2_normalize(part.reshape(-1, dim)))
                out[start : start + len(part)] = found.reshape(-1, rows, cols)
                start += len(part)
            labels[n] = torch.from_numpy(out)
            centroids[n] = torch.from_numpy(l2_normalize(km.centroids).astype(np.float32))
            self.files[n].close()
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
        labels = all_labels[index].to(features.device).long()
        centroids = targets.centroids[n].to(features.device)
        cell.append(cell_classification_loss(features.float(), centroids, labels, n, temperature))
        kl.append(cell_kl_loss(pixel_logits, pixel_centroids, centroids, labels, n, target_temperature))
    return torch.stack(cell).mean(), torch.stack(kl).mean()
