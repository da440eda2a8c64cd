"""The Zarr feature store: preallocated, written image-batch by image-batch, resumable.

Layout (see docs/architecture.md): ``patch`` (image, y, x, channel), ``cls``
(image, channel), ``attn`` (image, head, y, x), float16, one chunk per image so a
consumer reads one image without touching the others. A ``done`` flag per image is
written after that image's data, so an interrupted run resumes at the first image not
done and never trusts a half-written batch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from usseg.errors import UssegError
from usseg.zarr_io import open_zarr


def fingerprint(config: Mapping[str, Any]) -> str:
    """Canonical text of the parameters a store was made with; any change rebuilds it."""
    return json.dumps(config, sort_keys=True, default=str)


def create_store(
    path: Path,
    records: Sequence[Any],
    grid: tuple[int, int],
    dim: int,
    heads: int,
    attrs: Mapping[str, Any],
) -> None:
    """Lay out an empty store for ``records`` (ids and original sizes) without data."""
    n, (gh, gw) = len(records), grid
    coords = {
        "image": np.asarray([r.id for r in records], dtype=object),
        "height": ("image", np.asarray([r.height for r in records], dtype=np.int32)),
        "width": ("image", np.asarray([r.width for r in records], dtype=np.int32)),
    }
    xr.Dataset(coords=coords, attrs=dict(attrs)).to_zarr(path, mode="w", consolidated=False)
    group = zarr.open_group(str(path), mode="r+")
    layout = {
        "patch": ((n, gh, gw, dim), ("image", "y", "x", "channel"), np.float16),
        "cls": ((n, dim), ("image", "channel"), np.float16),
        "attn": ((n, heads, gh, gw), ("image", "head", "y", "x"), np.float16),
        "done": ((n,), ("image",), bool),
    }
    for name, (shape, dims, dtype) in layout.items():
        group.create_array(
            name, shape=shape, chunks=(1,) + shape[1:], dtype=dtype, dimension_names=dims, fill_value=0
        )


def first_missing(path: Path) -> int:
    """Index of the first image whose data is not known to be written."""
    done = zarr.open_array(str(path / "done"), mode="r")[:]
    missing = np.flatnonzero(~done)
    return int(missing[0]) if missing.size else len(done)


def write_batch(path: Path, start: int, patch: np.ndarray, cls: np.ndarray, attn: np.ndarray) -> None:
    """Write images ``start:start+len(patch)``, then mark them done (in that order)."""
    stop = start + len(patch)
    batch = xr.Dataset(
        {
            "patch": (("image", "y", "x", "channel"), patch.astype(np.float16)),
            "cls": (("image", "channel"), cls.astype(np.float16)),
            "attn": (("image", "head", "y", "x"), attn.astype(np.float16)),
        }
    )
    batch.to_zarr(path, region={"image": slice(start, stop)}, mode="r+", consolidated=False)
    zarr.open_array(str(path / "done"), mode="r+")[start:stop] = True


def read_attrs(path: Path) -> dict[str, Any]:
    return dict(zarr.open_group(str(path), mode="r").attrs)


def set_attrs(path: Path, **attrs: Any) -> None:
    zarr.open_group(str(path), mode="r+").attrs.update(attrs)


def open_features(path: str | Path) -> xr.Dataset:
    """Open a finished store lazily; each ``.isel(image=i)`` reads one image's chunks."""
    path = Path(path)
    if not path.is_dir():
        raise UssegError(f"feature store {path} does not exist; run `usseg features` first")
    ds = open_zarr(path)
    if "done" in ds and not bool(ds["done"].all()):
        raise UssegError(f"feature store {path} is incomplete; re-run `usseg features` to resume it")
    return ds
