"""Cluster-to-class matching over the whole split (never per image)."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from usseg.artifacts.metrics import MATCHERS as MATCHINGS

UNMATCHED = -1


def hungarian(counts: np.ndarray) -> np.ndarray:
    """One-to-one: cluster -> class maximising matched pixels; surplus clusters -> UNMATCHED."""
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(counts.shape[0], UNMATCHED, np.int64)
    mapping[rows] = cols
    return mapping


def majority(counts: np.ndarray) -> np.ndarray:
    """Many-to-one: each cluster -> its most frequent class (for over-clustering)."""
    return counts.argmax(axis=1).astype(np.int64)


MATCHERS = dict(zip(MATCHINGS, (hungarian, majority), strict=True))
