"""Accumulate a (prediction x class) count matrix image by image.

Rows are prediction ids 0..K-1 plus one last row for unlabelled predictions (255), so
"valid pixels" and "all pixels" scores come from the same matrix.
"""

from __future__ import annotations

import numpy as np

from usseg.errors import UssegError

IGNORE = 255


def remap(label: np.ndarray, mapping: np.ndarray | None) -> np.ndarray:
    """Apply a class protocol's old->new id table (255 stays ignored)."""
    if mapping is None:
        return label
    table = np.full(256, IGNORE, np.uint8)
    table[: len(mapping)] = mapping
    return table[label]


class Confusion:
    def __init__(self, num_pred: int, num_classes: int) -> None:
        self.num_pred, self.num_classes = num_pred, num_classes
        self.counts = np.zeros((num_pred + 1, num_classes), np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray, image_id: str) -> None:
        if pred.shape != gt.shape:
            raise UssegError(f"image {image_id!r}: prediction is {pred.shape}, ground truth is {gt.shape}")
        keep = gt != IGNORE
        p, g = pred[keep].astype(np.int64), gt[keep].astype(np.int64)
        if g.size and g.max() >= self.num_classes:
            raise UssegError(f"image {image_id!r}: ground truth has class id {g.max()} >= {self.num_classes}")
        bad = (p >= self.num_pred) & (p != IGNORE)
        if bad.any():
            raise UssegError(f"image {image_id!r}: prediction id {p[bad].max()} >= num_labels {self.num_pred}")
        p = np.where(p == IGNORE, self.num_pred, p)
        self.counts += np.bincount(p * self.num_classes + g, minlength=self.counts.size).reshape(self.counts.shape)
