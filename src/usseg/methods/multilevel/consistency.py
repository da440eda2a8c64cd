"""Consistency between the levels: align polarities, vote, fall back, score.

Every level decides foreground/background on its own, so a category or image
clustering may come out inverted. Each clustering unit (a pseudo-category, an image)
is flipped when its background overlaps the dataset-level foreground better than its
foreground does; then the aligned masks are combined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

from usseg.errors import UssegError

LEVELS = ("dataset", "category", "image")
COMBINE = ("majority", "intersection", "threshold")


def align(mask: np.ndarray, units: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Flip each unit's mask when its complement has the higher IoU with ``reference``.

    Ties (including a unit where the reference has no foreground) keep the level's own
    polarity.
    """
    mask = mask.astype(bool)
    ref = reference.astype(bool)
    _, inv = np.unique(units, return_inverse=True)
    m = inv.max() + 1

    def per_unit(a: np.ndarray) -> np.ndarray:
        return np.bincount(inv, weights=a.reshape(len(a), -1).sum(1), minlength=m)

    size, ref_size = per_unit(mask), per_unit(ref)
    total = np.bincount(inv, minlength=m) * mask[0].size
    inter_fg, inter_bg = per_unit(mask & ref), per_unit(~mask & ref)
    iou_fg = inter_fg / np.maximum(size + ref_size - inter_fg, 1)
    iou_bg = inter_bg / np.maximum(total - size + ref_size - inter_bg, 1)
    flip = (iou_bg > iou_fg)[inv]
    return np.where(flip[:, None, None], ~mask, mask).astype(np.uint8)


def combine(
    aligned: Mapping[str, np.ndarray], levels: Sequence[str], mode: str, threshold: float = 0.5, sigma: float = 0.0
) -> np.ndarray:
    """The consistent mask from the aligned level masks.

    ``majority``: more than half of ``levels``; ``intersection``: all of them;
    ``threshold``: the fraction of levels voting foreground, Gaussian-smoothed by ``sigma``
    patches, at least ``threshold`` (a soft vote: neighbours' agreement counts).
    """
    if not levels:
        raise UssegError("multilevel.consistency.levels: name at least one level")
    unknown = sorted(set(levels) - set(LEVELS))
    if unknown:
        raise UssegError(f"multilevel.consistency.levels: unknown level(s) {unknown} (known: {list(LEVELS)})")
    stack = np.stack([aligned[name].astype(bool) for name in levels])
    if mode == "majority":
        return (2 * stack.sum(0) > len(levels)).astype(np.uint8)
    if mode == "intersection":
        return stack.all(0).astype(np.uint8)
    if mode == "threshold":
        vote = votes(aligned, levels)
        if sigma > 0:
            vote = gaussian_filter(vote, sigma=(0, sigma, sigma), mode="nearest")
        return (vote >= threshold - 1e-6).astype(np.uint8)
    raise UssegError(f"multilevel.consistency.combine: unknown mode {mode!r} (known: {list(COMBINE)})")


def fall_back(mask: np.ndarray, fallback: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Images whose consistent mask is empty take ``fallback``'s mask; returns which did."""
    empty = ~mask.reshape(len(mask), -1).any(1)
    return np.where(empty[:, None, None], fallback, mask).astype(np.uint8), empty


def votes(aligned: Mapping[str, np.ndarray], levels: Sequence[str]) -> np.ndarray:
    """Fraction of the combined levels that call each patch foreground."""
    return np.stack([aligned[name].astype(np.float32) for name in levels]).mean(0)


def soft_score(mask: np.ndarray, vote: np.ndarray, weight: float, sigma: float) -> np.ndarray:
    """Foreground probability (N x gh x gw) handed to the refine stage.

    ``(1 - weight) * mask + weight * vote``: with ``weight < 0.5`` the score is above 0.5
    exactly on the consistent mask, so the refine stage's argmax without CRF reproduces
    it, while the vote fraction tells the CRF where the levels disagreed. ``sigma`` > 0
    smooths the score on the patch grid (Gaussian, in patches) before refinement.
    """
    score = (1.0 - weight) * mask.astype(np.float32) + weight * vote
    if sigma > 0:
        score = gaussian_filter(score, sigma=(0, sigma, sigma), mode="nearest")
    return np.clip(score, 0.0, 1.0).astype(np.float32)


def scores_array(score: np.ndarray) -> np.ndarray:
    """N x 2 x gh x gw probabilities: channel 0 background, channel 1 foreground."""
    return np.stack([1.0 - score, score], axis=1).astype(np.float32)
