"""Published numbers (published.yaml, package data) and which of our rows each one compares with."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from usseg.errors import UssegError
from usseg.evaluation.matching import MATCHERS
from usseg.yaml_files import parse_yaml

# The benchmark datasets, by our dataset name: sample datasets prepared by the same adapters are not them.
BENCHMARKS = ("voc2012", "coco81", "cocostuff27", "suim")
KINDS = ("paper", "anchor")
VALUES = ("mIoU", "pixel_accuracy", "mean_f1")
STRINGS = ("method", "kind", "dataset", "protocol", "source", "note")
OPTIONAL_STRINGS = ("split", "backbone")
FIELDS = (*STRINGS, *OPTIONAL_STRINGS, "matching", *VALUES)


@dataclass(frozen=True)
class Published:
    """One published figure set (values in %, None = not published)."""

    method: str
    kind: str
    dataset: str
    protocol: str
    split: str | None
    backbone: str | None
    matching: str
    mIoU: float | None
    pixel_accuracy: float | None
    mean_f1: float | None
    source: str
    note: str

    def matches(self, method: str, dataset: str, protocol: str, backbone: str, split: str) -> bool:
        """Same method, dataset and protocol; backbone and split equal or not stated (None)."""
        return ((self.method, self.dataset, self.protocol) == (method, dataset, protocol)
                and self.backbone in (None, backbone) and self.split in (None, split))  # fmt: skip


def _entry(raw: Any, where: str) -> Published:
    if not isinstance(raw, dict):
        raise UssegError(f"{where}: expected a mapping, got {type(raw).__name__}")
    missing, unknown = set(FIELDS) - set(raw), set(raw) - set(FIELDS)
    if missing or unknown:
        raise UssegError(f"{where}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    for key in STRINGS:
        if not isinstance(raw[key], str) or not raw[key]:
            raise UssegError(f"{where}: {key} must be a non-empty string, got {raw[key]!r}")
    for key in OPTIONAL_STRINGS:
        if raw[key] is not None and not isinstance(raw[key], str):
            raise UssegError(f"{where}: {key} must be a string or null, got {raw[key]!r}")
    for key in VALUES:
        value = raw[key]
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100
        ):
            raise UssegError(f"{where}: {key} must be a percentage in [0, 100] or null, got {value!r}")
    checks = (("dataset", BENCHMARKS), ("kind", KINDS), ("matching", tuple(MATCHERS)))
    for key, allowed in checks:
        if raw[key] not in allowed:
            raise UssegError(f"{where}: {key} {raw[key]!r} is not one of {list(allowed)}")
    return Published(**{k: (float(raw[k]) if k in VALUES and raw[k] is not None else raw[k]) for k in FIELDS})


def load_published(path: Path | None = None) -> list[Published]:
    """Read and check published.yaml (the package's copy unless ``path``); errors name the entry."""
    source = path or resources.files("usseg.evaluation") / "published.yaml"
    try:
        text = source.read_text()
    except OSError as exc:
        raise UssegError(f"cannot read published numbers {source}: {exc}") from exc
    data = parse_yaml(text, source)
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise UssegError(f"{source}: expected a mapping with an `entries` list")
    entries = []
    for i, raw in enumerate(data["entries"]):
        name = raw.get("method", "?") if isinstance(raw, dict) else "?"
        entries.append(_entry(raw, f"{source}: entry {i} ({name})"))
    return entries


def find_published(
    entries: list[Published], method: str, dataset: str, protocol: str, backbone: str, split: str
) -> Published | None:
    """The entry our row compares with: a stated backbone beats an unstated one; else file order."""
    found = [e for e in entries if e.matches(method, dataset, protocol, backbone, split)]
    return min(found, key=lambda e: (e.backbone is None, e.split is None), default=None)
