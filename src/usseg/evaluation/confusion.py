"""Accumulate a (prediction x class) count matrix image by image.

Rows are prediction ids 0..K-1 plus one last row for unlabelled predictions (255), so
"valid pixels" and "all pixels" scores come from the same matrix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from usseg.artifacts.atomic import atomic_file
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
    """The split's counts, and each image's own (intervals over images leave each out in turn)."""

    def __init__(self, num_pred: int, num_classes: int) -> None:
        self.num_pred, self.num_classes = num_pred, num_classes
        self.counts = np.zeros((num_pred + 1, num_classes), np.int64)
        self.images: list[np.ndarray] = []

    def per_image(self) -> np.ndarray:
        """(images x (K + 1) x C) counts, in update order."""
        return np.stack(self.images) if self.images else np.zeros((0, *self.counts.shape), np.int64)

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
        image = np.bincount(p * self.num_classes + g, minlength=self.counts.size).reshape(self.counts.shape)
        self.images.append(image)
        self.counts += image


PER_IMAGE_NAME = "confusions.npz"


def save_per_image(path: Path, ids: list[str], dataset: str, split: str, stacks: dict[str, np.ndarray]) -> None:
    """Per-image confusion matrices of every protocol (``counts_{protocol}``), with the image ids in order."""
    arrays = {f"counts_{name}": stack.astype(np.int64) for name, stack in stacks.items()}
    with atomic_file(path, "wb") as fh:
        np.savez_compressed(fh, ids=np.asarray(ids, dtype=str), dataset=np.asarray(dataset),
                            split=np.asarray(split), **arrays)


def load_per_image(path: Path) -> tuple[list[str], str, str, dict[str, np.ndarray]]:
    """(image ids, dataset, split, protocol -> images x (K + 1) x C) from :func:`save_per_image`'s file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            stacks = {k.removeprefix("counts_"): data[k] for k in data.files if k.startswith("counts_")}
            ids, dataset, split = [str(i) for i in data["ids"]], str(data["dataset"]), str(data["split"])
    except (OSError, ValueError, KeyError) as exc:
        raise UssegError(f"cannot read per-image confusions {path}: {exc}") from exc
    if any(s.shape[0] != len(ids) for s in stacks.values()):
        raise UssegError(f"{path}: per-image confusions do not have one matrix per image id ({len(ids)})")
    return ids, dataset, split, stacks
