"""A dataset's parameters (``data.datasets.<name>``), typed per adapter: each adapter module
names its dataclass as ``PARAMS``; the data schema (data.schema.yaml) checks the values."""

from __future__ import annotations

from dataclasses import dataclass, field

from usseg.datasets.archive import DEFAULT_MAX_EXPANSION
from usseg.job_args import OUTSIDE_GROUP


@dataclass(frozen=True, kw_only=True)
class FileSpec:
    """One file's entry in params.yaml: a dataset's ``archives.<key>`` or a ``checkpoints`` entry."""

    url: str | None = None  # http(s):// or file://
    mirror: str | None = None  # tried when url fails
    path: str | None = None  # a local copy used instead of downloading (still verified)
    checksum: str | None = None  # md5:<hex> | sha256:<hex>; None: none published yet
    filename: str | None = None  # default: from path or url


@dataclass(frozen=True, kw_only=True)
class DatasetParams:
    """What every dataset entry holds."""

    split: str  # the split experiments evaluate
    adapter: str | None = None  # default: the dataset's name
    # the dataset's key in params.yaml, so meta.json and messages name it (`usseg prepare` sets it)
    name: str | None = field(default=None, metadata={OUTSIDE_GROUP: "the key of data.datasets"})


@dataclass(frozen=True, kw_only=True)
class BenchmarkParams(DatasetParams):
    """A downloaded benchmark (voc2012, coco81, cocostuff27, suim; docs/datasets.md)."""

    splits: tuple[str, ...] | None = None  # to download and prepare; default: the evaluated split
    archives: dict[str, FileSpec] = field(default_factory=dict)
    max_expansion: float = DEFAULT_MAX_EXPANSION  # extracted bytes allowed per archive byte
