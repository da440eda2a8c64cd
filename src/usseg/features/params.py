"""The features step's parameters, typed (the schema, features.schema.yaml, has checked them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from usseg.job_args import OUTSIDE_GROUP


@dataclass(frozen=True)
class FeatureParams:
    """`usseg features`: one feature store's settings (the merged features groups) and its split."""

    image_size: int  # square side, a multiple of the patch size
    facet: str  # keys | query | value | token
    batch_size: int
    device: str  # auto | cpu | cuda
    # the dataset's evaluated split (data.datasets.<name>.split), added by the job plan
    split: str = field(default="val", metadata={OUTSIDE_GROUP: "data.datasets.<name>.split"})
