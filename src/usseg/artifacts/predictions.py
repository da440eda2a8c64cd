"""Patch-level predictions, the hand-over from any method to the shared refine stage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from usseg.artifacts.atomic import atomic_dir
from usseg.errors import UssegError
from usseg.zarr_io import open_zarr

UNLABELLED = 255


class PredictionWriter:
    """Writes predictions batch by batch into a store laid out on the first batch.

    Memory is one batch whatever the split size; ``write_predictions`` (everything at
    once) and streaming writers share this one layout.
    """

    def __init__(
        self, folder: Path, image_ids: Sequence[str], heights: Sequence[int], widths: Sequence[int],
        kind: str, num_labels: int, attrs: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        if kind not in ("hard", "soft"):
            raise ValueError(f"kind must be 'hard' or 'soft', not {kind!r}")
        if not 1 <= num_labels <= 254:
            raise UssegError(f"num_labels={num_labels}: predictions support 1..254 labels")
        self.folder, self.kind, self.num_labels, self.n = Path(folder), kind, int(num_labels), len(image_ids)
        self.written = 0
        coords = {
            "image": np.asarray(image_ids, dtype=object),
            "height": ("image", np.asarray(heights, dtype=np.int32)),
            "width": ("image", np.asarray(widths, dtype=np.int32)),
        }
        self.attrs = {"kind": kind, "num_labels": self.num_labels, **(attrs or {})}
        xr.Dataset(coords=coords, attrs=self.attrs).to_zarr(self.folder, mode="w", consolidated=False)

    @property
    def name(self) -> str:
        return "labels" if self.kind == "hard" else "scores"

    def _create(self, one: tuple[int, ...]) -> None:
        dims = ("image", "y", "x") if self.kind == "hard" else ("image", "label", "y", "x")
        dtype = np.uint8 if self.kind == "hard" else np.float32
        group = zarr.open_group(str(self.folder), mode="r+")
        group.create_array(
            self.name, shape=(self.n, *one), chunks=(1, *one), dtype=dtype, dimension_names=dims, fill_value=0
        )

    def write(self, values: np.ndarray) -> None:
        """The next ``len(values)`` images: labels (B x gh x gw) or scores (B x K x gh x gw)."""
        if self.written + len(values) > self.n:
            raise UssegError(f"{self.folder}: more than {self.n} images written")
        if self.kind == "hard":
            values = np.asarray(values)
            valid = (values < self.num_labels) | (values == UNLABELLED)
            if values.min() < 0 or not valid.all():
                raise UssegError(
                    f"labels outside 0..{self.num_labels - 1} (and {UNLABELLED}) in {self.folder}"
                )
            values = values.astype(np.uint8)
        else:
            values = np.asarray(values, dtype=np.float32)
            if not np.isfinite(values).all() or (values < 0).any():
                raise UssegError(f"scores for {self.folder} contain NaN, infinite or negative values")
        if self.written == 0:
            self._create(values.shape[1:])
        array = zarr.open_array(str(self.folder / self.name), mode="r+")
        array[self.written : self.written + len(values)] = values
        self.written += len(values)

    def check_complete(self) -> None:
        if self.written != self.n:
            raise UssegError(f"{self.folder}: {self.written} of {self.n} images were written")


@contextlib.contextmanager
def prediction_writer(
    path: str | Path, image_ids: Sequence[str], heights: Sequence[int], widths: Sequence[int], *,
    kind: str, num_labels: int, attrs: dict[str, Any] | None = None,
) -> Iterator[PredictionWriter]:  # fmt: skip
    """Stream predictions into ``path``: published only when every image was written."""
    with atomic_dir(path) as tmp:
        writer = PredictionWriter(tmp, image_ids, heights, widths, kind, num_labels, attrs)
        yield writer
        writer.check_complete()


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
    kind = "hard" if labels is not None else "soft"
    values = labels if labels is not None else scores
    with prediction_writer(
        path, image_ids, heights, widths, kind=kind, num_labels=num_labels, attrs=attrs
    ) as writer:
        writer.write(values)


def open_predictions(path: str | Path) -> xr.Dataset:
    path = Path(path)
    if not path.is_dir():
        raise UssegError(f"predictions {path} do not exist")
    ds = open_zarr(path)
    if ds.attrs.get("kind") not in ("hard", "soft"):
        raise UssegError(f"{path} is not a patch-level predictions store (attrs.kind missing)")
    return ds
