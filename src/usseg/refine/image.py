"""One image's refinement: patch prediction -> full-size probabilities -> CRF -> labels.

Shared by both CRF implementations so they refine exactly the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from usseg.artifacts.upsample import upsample_labels, upsample_scores
from usseg.errors import UssegError
from usseg.refine.params import RefineSettings

UNLABELLED = 255


@dataclass
class Upsampled:
    """An image's prediction at full size before the CRF."""

    labels: np.ndarray  # (H, W) uint8, the un-refined prediction, 255 = unlabelled
    probs: np.ndarray | None  # (K, H, W) float32; None when nothing needs it


def check_scores(scores: np.ndarray, num_labels: int, where: str) -> None:
    if scores.ndim != 3 or scores.shape[0] != num_labels:
        raise UssegError(f"{where}: scores have shape {scores.shape}, expected ({num_labels}, gh, gw)")
    if not np.isfinite(scores).all():
        raise UssegError(f"{where}: scores contain NaN or infinite values")
    if (scores < 0).any():
        raise UssegError(f"{where}: scores contain negative values (expected probabilities)")


def check_labels(labels: np.ndarray, num_labels: int, where: str) -> None:
    if labels.ndim != 2:
        raise UssegError(f"{where}: labels have shape {labels.shape}, expected (gh, gw)")
    bad = (labels >= num_labels) & (labels != UNLABELLED)
    if bad.any():
        raise UssegError(
            f"{where}: labels {sorted(set(labels[bad].tolist()))[:5]} outside 0..{num_labels - 1} "
            f"(and {UNLABELLED} = unlabelled)"
        )


def from_scores(scores: np.ndarray, height: int, width: int, num_labels: int, where: str) -> Upsampled:
    """Soft scores: rows renormalised to sum 1, bilinear; a patch scoring all zero is unlabelled."""
    check_scores(scores, num_labels, where)
    total = scores.sum(0, keepdims=True)
    empty = total[0] <= 0
    probs = np.where(total > 0, scores / np.where(total > 0, total, 1.0), 1.0 / num_labels)
    up = upsample_scores(probs.astype(np.float32), height, width)
    labels = up.argmax(0).astype(np.uint8)
    labels[upsample_labels(empty, height, width)] = UNLABELLED
    return Upsampled(labels, up)


def from_labels(
    labels: np.ndarray, height: int, width: int, num_labels: int, confidence: float, need_probs: bool, where: str
) -> Upsampled:
    """Hard labels, nearest. As probabilities: ``confidence`` on the label, the rest spread
    evenly (1.0 = one-hot), uniform where unlabelled."""
    check_labels(labels, num_labels, where)
    up = upsample_labels(labels, height, width)
    if not need_probs:
        return Upsampled(up, None)
    if num_labels == 1:
        return Upsampled(up, np.ones((1, height, width), np.float32))
    probs = np.full((num_labels, height, width), (1.0 - confidence) / (num_labels - 1), np.float32)
    labelled = up != UNLABELLED
    np.put_along_axis(probs, np.where(labelled, up, 0)[None].astype(np.intp), confidence, 0)
    probs[:, ~labelled] = 1.0 / num_labels
    return Upsampled(up, probs)


def unary(probs: np.ndarray, clip: float) -> np.ndarray:
    """-log p with p clipped to [clip, 1], as pydensecrf.utils.unary_from_softmax."""
    return -np.log(np.clip(probs, clip, 1.0)).astype(np.float32)


def finish(q: np.ndarray, up: Upsampled, settings: RefineSettings) -> np.ndarray:
    """CRF marginals -> labels; unlabelled pixels stay 255 unless ``fill_unlabelled``."""
    labels = q.argmax(0).astype(np.uint8)
    if not settings.fill_unlabelled:
        labels[up.labels == UNLABELLED] = UNLABELLED
    return labels
