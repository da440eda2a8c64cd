"""Binary foreground IoU against ground truth, accumulated over a split.

The framework's claim is that consistency across levels gives a better binary mask
than any one level; this measures each mask on the same pixels: ground-truth
foreground is any non-background class, ignore pixels (255) are left out, and the
IoU is computed from counts summed over the whole split (not averaged per image).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np


def truth(label: np.ndarray, ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, valid) pixel masks of a ground-truth label map with background 0."""
    valid = label != ignore_index
    return (label != 0) & valid, valid


class ForegroundIoU:
    """Intersection and union counts per named mask, summed image by image."""

    def __init__(self) -> None:
        self.inter: dict[str, int] = defaultdict(int)
        self.union: dict[str, int] = defaultdict(int)

    def add(self, name: str, pred: np.ndarray, fg: np.ndarray, valid: np.ndarray) -> None:
        pred = pred.astype(bool) & valid
        self.inter[name] += int((pred & fg).sum())
        self.union[name] += int((pred | fg).sum())

    def result(self) -> dict[str, float | None]:
        """IoU per mask; None when neither prediction nor truth has foreground."""
        return {k: (self.inter[k] / self.union[k] if self.union[k] else None) for k in sorted(self.union)}
