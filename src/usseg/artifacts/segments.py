"""Segment stores (xarray Zarr, written atomically, one job each): the contract between the
segment steps (DatUS²'s Louvain segments, DSM's spectral segments), the shared crop-embedding
step and the labelling steps.

- ``segments.zarr``: ``segments`` and ``communities`` (image, y, x) int32 (segments: -1 =
  invalid), ``num_segments`` (image); coords image/height/width as in the feature store.
- ``segment_features.zarr``: ``cls`` (segment, channel) float32, L2-normalised;
  coords ``image`` (segment) = image id, ``segment_id`` (segment); ``done`` (chunk) bool,
  one flag per chunk of ``batch_size`` segments (what a resumed job skips).
- ``pseudolabels.zarr``: ``label`` (segment) int32 in 0..K-1, same segment coords.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from usseg.artifacts.atomic import atomic_dir
from usseg.errors import UssegError
from usseg.zarr_io import open_zarr


def ids(values: Any) -> list[str]:
    """Image ids as Python strings (Zarr 3 gives numpy variable-width strings, which numpy
    will not cast to fixed-width ``str`` arrays)."""
    return [str(v) for v in values]


def _write(ds: xr.Dataset, path: Path) -> None:
    with atomic_dir(path) as tmp:
        ds.to_zarr(tmp, mode="w", consolidated=False)


def _open(path: Path, variable: str, made_by: str) -> xr.Dataset:
    if not path.is_dir():
        raise UssegError(f"{path} does not exist; run `usseg {made_by}` first")
    ds = open_zarr(path)
    if variable not in ds:
        raise UssegError(f"{path} has no {variable!r} array: it was not written by `usseg {made_by}`")
    return ds


def write_segments(
    path: Path,
    image_ids: Any,
    heights: np.ndarray,
    widths: np.ndarray,
    segments: np.ndarray,
    communities: np.ndarray,
    attrs: dict[str, Any],
) -> None:
    dims = ("image", "y", "x")
    ds = xr.Dataset(
        {
            "segments": (dims, segments.astype(np.int32)),
            "communities": (dims, communities.astype(np.int32)),
            "num_segments": ("image", (segments.max(axis=(1, 2)) + 1).astype(np.int32)),
        },
        coords={
            "image": np.asarray(ids(image_ids), dtype=object),
            "height": ("image", heights),
            "width": ("image", widths),
        },
        attrs=attrs,
    )
    _write(ds, path)


def open_segments(path: Path) -> xr.Dataset:
    return _open(path, "segments", "datus2-segments` or `usseg spectral-segments")


def segment_coords(image_ids: Any, segment_ids: Any) -> dict[str, Any]:
    """Coordinates tying each row of a per-segment array to (image id, segment id)."""
    return {
        "segment": np.arange(len(image_ids)),
        "image": ("segment", np.asarray(ids(image_ids), dtype=object)),
        "segment_id": ("segment", np.asarray(segment_ids, dtype=np.int32)),
    }


def create_segment_features(
    path: Path, image_ids: list[str], segment_ids: list[int], dim: int, batch_size: int, attrs: dict[str, Any]
) -> None:
    """Lay out an empty ``segment_features`` store: ``cls`` in chunks of ``batch_size`` segments,
    and a ``done`` flag per chunk set after its rows, so a killed writer resumes at a chunk."""
    n = len(image_ids)
    xr.Dataset(coords=segment_coords(image_ids, segment_ids), attrs=attrs).to_zarr(
        path, mode="w", consolidated=False
    )
    group = zarr.open_group(str(path), mode="r+")
    group.create_array(
        "cls", shape=(n, dim), chunks=(batch_size, dim), dtype=np.float32,
        dimension_names=("segment", "channel"), fill_value=0,
    )  # fmt: skip
    chunks = -(-n // batch_size)
    group.create_array(
        "done", shape=(chunks,), chunks=(1,), dtype=bool, dimension_names=("chunk",), fill_value=False
    )


def write_segment_feature_batch(path: Path, index: int, cls: np.ndarray) -> None:
    """Rows of chunk ``index``, then its done flag (in that order)."""
    array = zarr.open_array(str(path / "cls"), mode="r+")
    start = index * array.chunks[0]
    array[start : start + len(cls)] = cls.astype(np.float32)
    zarr.open_array(str(path / "done"), mode="r+")[index] = True


def first_missing_batch(path: Path) -> int:
    """Index of the first chunk of segments not known to be written."""
    done = zarr.open_array(str(path / "done"), mode="r")[:]
    missing = np.flatnonzero(~done)
    return int(missing[0]) if missing.size else len(done)


def write_segment_features(
    path: Path, cls: np.ndarray, image_ids: list[str], segment_ids: list[int], attrs: dict[str, Any]
) -> None:
    """All rows at once, in the layout the (resumable) segment-features job writes."""
    with atomic_dir(path) as tmp:
        create_segment_features(tmp, image_ids, segment_ids, cls.shape[1], max(len(cls), 1), attrs)
        write_segment_feature_batch(tmp, 0, cls)


def open_segment_features(path: Path) -> xr.Dataset:
    return _open(path, "cls", "datus2-segment-features")


def write_pseudolabels(
    path: Path, labels: np.ndarray, image_ids: Any, segment_ids: np.ndarray, attrs: dict[str, Any]
) -> None:
    ds = xr.Dataset(
        {"label": ("segment", labels.astype(np.int32))},
        coords=segment_coords(ids(image_ids), list(segment_ids)),
        attrs=attrs,
    )
    _write(ds, path)


def open_pseudolabels(path: Path) -> xr.Dataset:
    return _open(path, "label", "datus2-pseudolabels` or `usseg spectral-clusters")
