"""The DatUS² steps' parameters, typed (the schema, datus2.schema.yaml, has checked them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentParams:
    """`usseg datus2-segments`: the patch-key graph, Louvain and the valid-segment size."""

    center: bool
    threshold: float
    resolution: float
    seed: int
    tau: int


@dataclass(frozen=True)
class CropParams:
    """`usseg datus2-segment-features`: the crop of each segment fed to the ViT (spectral's too)."""

    fill: str  # zero | mean
    crop_resize: int
    crop_size: int
    batch_size: int
    device: str  # auto | cpu | cuda


@dataclass(frozen=True)
class PseudolabelParams:
    """`usseg datus2-pseudolabels`: the dataset-level k-means of the segment embeddings."""

    k: int | None  # None: the number of classes
    pca: bool
    init: str  # k-means++ | random
    epochs: int
    kmeans_batch_size: int
    seed: int
