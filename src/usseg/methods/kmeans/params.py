"""The kmeans step's parameters, typed (the schema, kmeans.schema.yaml, has checked them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KMeansParams:
    k: int | None  # None: the number of classes
    niter: int
    nredo: int
    seed: int
    normalize: bool
    max_points: int
