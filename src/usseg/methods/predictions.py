"""Patch-level predictions, the hand-over from any method to the shared refine stage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from usseg.atomic import atomic_dir
from usseg.errors import UssegError
from usseg.zarr_io import open_zarr

UNLABELLED = 255


def write_predictions(
    path: str | Path,
    image_ids: Sequence[str],
    heights: Sequence[int],
    widths: Sequence[int],
    *,
    labels: np.ndarray | None = None,
    scores: np.ndarray | None = None,
    num_labels: int,
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write hard ``labels`` (N x gh x gw, 255 = unlabelled) or soft ``scores`` (N x K x gh x gw)."""
    if (labels is None) == (scores is None):
        raise ValueError("give exactly one of labels or scores")
    if not 1 <= num_labels <= 254:
        raise UssegError(f"num_labels={num_labels}: predictions support 1..254 labels")
    coords = {
        "image": np.asarray(image_ids, dtype=object),
        "height": ("image", np.asarray(heights, dtype=np.int32)),
        "width": ("image", np.asarray(widths, dtype=np.int32)),
    }
    if labels is not None:
        labels = np.asarray(labels)
        valid = (labels < num_labels) | (labels == UNLABELLED)
        if labels.min() < 0 or not valid.all():
            raise UssegError(f"labels outside 0..{num_labels - 1} (and {UNLABELLED}) in {path}")
        data = {"labels": (("image", "y", "x"), labels.astype(np.uint8))}
        kind = "hard"
    else:
        scores = np.asarray(scores, dtype=np.float32)
        if not np.isfinite(scores).all() or (scores < 0).any():
            raise UssegError(f"scores for {path} contain NaN, infinite or negative values")
        data = {"scores": (("image", "label", "y", "x"), scores)}
        kind = "soft"
    ds = xr.Dataset(data, coords=coords, attrs={"kind": kind, "num_labels": int(num_labels), **(attrs or {})})
    encoding = {name: {"chunks": tuple(1 if d == "image" else s for d, s in zip(v.dims, v.shape))}
                for name, v in ds.data_vars.items()}
    with atomic_dir(path) as tmp:
        ds.to_zarr(tmp, mode="w", encoding=encoding, consolidated=False)


def open_predictions(path: str | Path) -> xr.Dataset:
    path = Path(path)
    if not path.is_dir():
        raise UssegError(f"predictions {path} do not exist")
    ds = open_zarr(path)
    if ds.attrs.get("kind") not in ("hard", "soft"):
        raise UssegError(f"{path} is not a patch-level predictions store (attrs.kind missing)")
    return ds
