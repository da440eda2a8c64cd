"""The spectral steps' parameters, typed (the schema, spectral.schema.yaml, has checked them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentParams:
    """`usseg spectral-segments`: the eigenvectors and the multi-region k-means of each image."""

    num_eigenvectors: int
    num_segments: int
    colour_lambda: float
    seed: int


@dataclass(frozen=True)
class ClusterParams:
    """`usseg spectral-clusters`: the dataset-level k-means of the segments' crop features."""

    k: int | None  # None: the number of classes - 1
    pca_dim: int
    kmeans_batch_size: int
    max_iter: int
    seed: int
