"""Which images a run trains on, and batches of them warped to the network's input size.

Images are warped to a square (aspect not kept), exactly as the feature stage does, so
the predictions' grid maps back to the original size through the shared refine stage.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from usseg.artifacts.prepared import PreparedDataset, Record, load_resized


def training_split(dataset: PreparedDataset, requested: str, evaluation_split: str) -> str:
    """``auto``: the prepared ``train`` split when there is one, else the evaluation split.

    Falling back to the evaluation split makes training transductive, as the k-means
    baseline's clustering of that same split is.
    """
    if requested != "auto":
        return requested
    return "train" if (dataset.root / "train.csv").is_file() else evaluation_split


class WarpedImages(Dataset):
    """(index, uint8 3 x size x size tensor) for each record of a split."""

    def __init__(self, dataset: PreparedDataset, records: Sequence[Record], size: int) -> None:
        self.dataset, self.records, self.size = dataset, list(records), size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        image = load_resized(self.dataset, self.records[i], self.size, 1)
        return i, torch.tensor(image).permute(2, 0, 1).contiguous()  # a copy: PIL's array is read-only


def batches(images: WarpedImages, order: Iterable[int], batch_size: int, workers: int) -> DataLoader:
    """Batches in the given ``order`` (a seeded permutation while training, 0..N-1 otherwise)."""
    return DataLoader(images, batch_size=batch_size, sampler=list(order), num_workers=workers)
