"""Step 4 of DatUS²: dense patch-level pseudo-masks from segment pseudo-labels."""

from __future__ import annotations

import numpy as np

from usseg.artifacts.predictions import UNLABELLED


def dense_masks(
    segments: np.ndarray, image_index: np.ndarray, segment_id: np.ndarray, labels: np.ndarray
) -> np.ndarray:
    """Each patch of a valid segment gets its segment's cluster id; every other patch 255.

    ``segments`` is (images, gh, gw) with negative = invalid; segment ``s`` of the
    pseudo-label table lies in image ``image_index[s]`` with id ``segment_id[s]``.
    A valid segment missing from the table is an error, not a silent 255.
    """
    n = len(segments)
    width = max(int(segments.max()) + 1, int(segment_id.max(initial=-1)) + 1, 1)
    table = np.full((n, width), -1, dtype=np.int64)
    table[image_index, segment_id] = labels
    looked_up = table[np.arange(n)[:, None, None], np.clip(segments, 0, None)]
    valid = segments >= 0
    if (looked_up[valid] < 0).any():
        missing = sorted(set(np.nonzero(valid & (looked_up < 0))[0].tolist()))
        raise ValueError(f"valid segments without a pseudo-label in images {missing[:10]}")
    return np.where(valid, looked_up, UNLABELLED).astype(np.uint8)
