"""What the benchmark adapters share: which splits to prepare, and where raw files are."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from usseg.datasets.params import BenchmarkParams
from usseg.errors import UssegError


def chosen_splits(params: BenchmarkParams, dataset: str, known: Iterable[str]) -> list[str]:
    """``splits`` (default: the evaluated split), checked against the dataset's."""
    known = list(known)
    splits = list(params.splits or [params.split])
    unknown = [s for s in splits if s not in known]
    if unknown:
        raise UssegError(f"data.datasets.{dataset}.splits: unknown split(s) {unknown} (known: {known})")
    if params.split not in splits:
        raise UssegError(
            f"data.datasets.{dataset}.split {params.split!r} is not among the prepared splits {splits}"
        )
    return splits


def raw_sources(raw: Path | None, dataset: str) -> dict[str, Any]:
    """The manifest `usseg download` wrote: what was fetched, from where, with which checksum."""
    if raw is None:
        raise UssegError(
            f"dataset {dataset!r} is prepared from downloaded files: pass --raw data/raw/{dataset}"
        )
    manifest = raw / "sources.json"
    if not manifest.is_file():
        raise UssegError(f"{raw} is not a completed download of {dataset!r}: {manifest} is missing")
    return json.loads(manifest.read_text())


def require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise UssegError(f"{what}: folder {path} is missing (is the archive in the official layout?)")
    return path


def read_ids(path: Path, what: str) -> list[str]:
    """One image id per line (blank lines ignored), as VOC ImageSets and curated lists use."""
    if not path.is_file():
        raise UssegError(f"{what}: list file {path} is missing")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UssegError(f"{what}: list file {path} is empty")
    return ids
