"""The multilevel steps' parameters, typed (the schema, multilevel.schema.yaml, has checked them).

Each step reads the branch's k-means settings and its own nested group, in params.yaml's shape,
so a job's recorded parameters and its sharing key stay those of the group it was given.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetGroup:
    k: int
    polarity: str  # border | attention


@dataclass(frozen=True)
class CategoryGroup:
    categories: int | None  # None: the number of foreground classes
    polarity: str


@dataclass(frozen=True)
class ImageGroup:
    polarity: str


@dataclass(frozen=True)
class LevelKMeans:
    """The branch's k-means settings, which every level reads first."""

    seed: int
    normalize: bool
    niter: int
    nredo: int


@dataclass(frozen=True)
class FittedLevel(LevelKMeans):
    """A level whose k-means is fitted on a subsample of the split's patches."""

    max_fit_patches: int


@dataclass(frozen=True)
class DatasetLevelParams(FittedLevel):
    """`usseg multilevel-level --level dataset`: k-means over the patches of the whole split."""

    dataset: DatasetGroup


@dataclass(frozen=True)
class CategoryLevelParams(FittedLevel):
    """`--level category`: pseudo-categories of the CLS tokens, then k = 2 inside each."""

    category: CategoryGroup


@dataclass(frozen=True)
class ImageLevelParams(LevelKMeans):
    """`--level image`: k = 2 on each image's own patches."""

    image: ImageGroup


LEVEL_PARAMS = {"dataset": DatasetLevelParams, "category": CategoryLevelParams, "image": ImageLevelParams}
LevelParams = DatasetLevelParams | CategoryLevelParams | ImageLevelParams


@dataclass(frozen=True)
class ConsistencyGroup:
    levels: tuple[str, ...]
    combine: str  # majority | intersection | threshold
    vote_threshold: float
    align: bool
    fallback: str  # image | none
    soft_weight: float
    smooth_sigma: float


@dataclass(frozen=True)
class ConsistencyParams:
    """`usseg multilevel-consistency`: align and combine the three level masks."""

    consistency: ConsistencyGroup


@dataclass(frozen=True)
class LabelGroup:
    embedding: str  # crop | attention
    min_area: float
    connectivity: int  # 4 | 8
    k: int | None  # None: the number of foreground classes
    pca_dim: int | None
    batch_size: int
    device: str  # auto | cpu | cuda


@dataclass(frozen=True)
class LabelParams:
    """`usseg multilevel-label`: region embeddings clustered over the split."""

    seed: int
    niter: int
    nredo: int
    label: LabelGroup
