"""Label maps, the hand-over to evaluation from refine or from a method's own labelling.

A folder of ``{id}.png`` (uint8 ids; 255 unlabelled) and ``index.json`` (``num_labels``,
the split, the CRF that made them...). The index is written last, so a folder without one
is not finished and no reader takes it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from usseg.artifacts.atomic import write_json
from usseg.artifacts.prepared import read_label, write_label
from usseg.errors import UssegError

INDEX = "index.json"
NO_CRF = "none"  # index ``crf`` of maps made without it; not "off": YAML 1.1 reads a bare off as false
IGNORE_COLOUR = (255, 255, 255)  # how pictures draw 255 (unlabelled / ignored)


def map_path(folder: Path, image_id: str) -> Path:
    return Path(folder) / f"{image_id}.png"


def has_map(folder: Path, image_id: str) -> bool:
    """Whether the image's map is written (a resumed writer skips it)."""
    return map_path(folder, image_id).is_file()


def write_map(folder: Path, image_id: str, labels: np.ndarray) -> None:
    """One image's map, renamed into place when complete."""
    write_label(map_path(folder, image_id), labels)


def read_map(folder: Path, image_id: str) -> np.ndarray:
    path = map_path(folder, image_id)
    if not path.is_file():
        raise UssegError(f"image {image_id!r}: no prediction (label map {path})")
    return read_label(path, image_id)


def write_index(folder: Path, doc: Mapping[str, Any]) -> None:
    """Mark the folder finished: ``doc`` must say how many labels its maps use."""
    if not isinstance(doc.get("num_labels"), int):
        raise TypeError(f"{folder}: a label-map index needs an integer num_labels, not {doc.get('num_labels')!r}")
    write_json(Path(folder) / INDEX, dict(doc))


def read_index(folder: Path, num_labels: int | None = None) -> dict[str, Any]:
    """The index of a finished folder (``num_labels``: the count the reader requires)."""
    path = Path(folder) / INDEX
    if not path.is_file():
        raise UssegError(f"{folder} has no {INDEX}: it is not a finished label-map folder")
    index = json.loads(path.read_text())
    if num_labels is not None and index.get("num_labels") != num_labels:
        raise UssegError(f"{folder}: expected {num_labels}-label maps, {INDEX} says {index.get('num_labels')}")
    return index


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids -> colours; ignored/unlabelled (255) drawn white."""
    lut = np.full((256, 3), IGNORE_COLOUR, np.uint8)
    lut[: len(palette)] = palette
    return lut[label]
