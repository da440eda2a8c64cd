"""COCO-81 (the COMUS protocol): background + the 80 COCO thing classes, from instances.

Images from ``{split}2017.zip``, instances from ``annotations_trainval2017.zip``
(``annotations/instances_{split}2017.json``), rasterised with pycocotools.

Overlap rule (deterministic): non-crowd instances are painted largest first (by the
annotation's ``area``, ties by annotation id), so where instances overlap the smaller one
wins (it is usually the one in front). Crowd regions (``iscrowd: 1``) then become 255
(ignored) wherever no non-crowd instance covers them. Class ids follow the category ids
in ascending order: 1..80; 0 is background. Every image of the annotation file is kept,
including the ones without annotations (all background).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from usseg.artifacts.prepared import IGNORE, PreparedWriter, Sample
from usseg.datasets.benchmark import chosen_splits, raw_sources, require_dir
from usseg.datasets.download import download_sources, source
from usseg.datasets.params import BenchmarkParams
from usseg.errors import UssegError

NAME = "coco81"
NEEDS_DOWNLOAD = True
PARAMS = BenchmarkParams
SPLITS = ("train", "val")
ANNOTATIONS = "annotations"
HELP = "https://cocodataset.org/#download (2017 images and 2017 train/val annotations)"


def download(raw: Path, params: BenchmarkParams) -> None:
    splits = chosen_splits(params, NAME, SPLITS)
    jsons = [f"annotations/instances_{s}2017.json" for s in splits]
    sources = [source(NAME, ANNOTATIONS, params, include=jsons, help=HELP)]
    sources += [source(NAME, f"{s}2017", params, include=[f"{s}2017/"], help=HELP) for s in splits]
    download_sources(raw, sources)


def load_coco(path: Path) -> Any:
    """pycocotools' COCO index of an instances file (its chatter kept off stdout)."""
    from pycocotools.coco import COCO

    if not path.is_file():
        raise UssegError(f"{NAME}: instances file {path} is missing")
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def rasterise(coco: Any, image_id: int, class_of: dict[int, int]) -> np.ndarray:
    """The class map of one image under the overlap rule in the module docstring."""
    info = coco.loadImgs(image_id)[0]
    label = np.zeros((info["height"], info["width"]), np.uint8)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=None))
    for ann in sorted((a for a in anns if not a.get("iscrowd")), key=lambda a: (-a["area"], a["id"])):
        label[coco.annToMask(ann).astype(bool)] = class_of[ann["category_id"]]
    covered = label != 0
    for ann in (a for a in anns if a.get("iscrowd")):
        label[coco.annToMask(ann).astype(bool) & ~covered] = IGNORE
    return label


def _samples(coco: Any, images: Path, class_of: dict[int, int]) -> Iterator[Sample]:
    for image_id in sorted(coco.getImgIds()):
        info = coco.loadImgs(image_id)[0]
        path = images / info["file_name"]
        if not path.is_file():
            raise UssegError(f"{NAME}: image {image_id} has no file {path}")
        yield Sample(id=Path(info["file_name"]).stem, image=path, label=rasterise(coco, image_id, class_of))


def prepare(raw: Path | None, out: Path, params: BenchmarkParams) -> None:
    """Rasterise the instances of each chosen split into 81-class label maps."""
    manifest = raw_sources(raw, NAME)
    splits = chosen_splits(params, NAME, SPLITS)
    cocos = {s: load_coco(raw / ANNOTATIONS / "annotations" / f"instances_{s}2017.json") for s in splits}
    categories = sorted(cocos[splits[0]].loadCats(cocos[splits[0]].getCatIds()), key=lambda c: c["id"])
    class_of = {c["id"]: i + 1 for i, c in enumerate(categories)}
    classes = ["background"] + [c["name"] for c in categories]
    rule = "non-crowd instances painted largest area first (smaller on top); crowd -> 255 where uncovered"
    writer = PreparedWriter(
        out, NAME, classes, has_background=True, source={"raw": manifest, "overlap_rule": rule}
    )
    writer.write(
        (
            s,
            _samples(
                cocos[s], require_dir(raw / f"{s}2017" / f"{s}2017", f"{NAME} images {s}2017"), class_of
            ),
        )
        for s in splits
    )
