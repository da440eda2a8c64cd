"""COCO-Stuff-27, the curated benchmark of IIC, PiCIE and STEGO.

Images from COCO 2017 (``{split}2017.zip``), labels from COCO-Stuff's
``stuffthingmaps_trainval2017.zip`` (``{split}2017/{id}.png``: fine ids 0..181, 255 =
unlabelled), image ids from PiCIE's curated lists ``Coco164kFull_Stuff_Coarse_7.txt``
(train2017: 49,629; val2017: 2,175). Fine ids map to 27 coarse classes: the 12 thing
supercategories (0..11), then the 15 stuff ones (12..26). Following PiCIE's evaluation,
image and label are resized (shorter side ``resize``; bilinear / nearest) and centre-
cropped to ``crop`` at prepare time. Protocols: All-27 (default) and ``stuff15`` (thing
pixels ignored, stuff renumbered 0..14).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from usseg.artifacts.prepared import IGNORE, PreparedWriter, Sample, read_label, read_rgb
from usseg.datasets.benchmark import chosen_splits, raw_sources, read_ids, require_dir
from usseg.datasets.download import download_sources, downloaded, source
from usseg.datasets.params import BenchmarkParams
from usseg.errors import UssegError

NAME = "cocostuff27"
NEEDS_DOWNLOAD = True
SPLITS = ("train", "val")


@dataclass(frozen=True, kw_only=True)
class CocoStuffParams(BenchmarkParams):
    """PiCIE's evaluation transform, applied at prepare time."""

    resize: int | None = None  # shorter side (bilinear, labels nearest); None = keep
    crop: int | None = None  # centre crop side; None = none


PARAMS = CocoStuffParams
HELP = {
    "images": "https://cocodataset.org/#download (2017 images)",
    "stuffthingmaps": "https://github.com/nightrome/cocostuff (stuffthingmaps_trainval2017.zip)",
    "curated": "https://github.com/janghyuncho/PiCIE/tree/master/curated",
}

THINGS = [
    "electronic", "appliance", "food", "furniture", "indoor", "kitchen", "accessory", "animal", "outdoor",
    "person", "sports", "vehicle",
]  # fmt: skip
STUFF = [
    "ceiling", "floor", "food-stuff", "furniture-stuff", "rawmaterial", "textile", "wall", "window",
    "building", "ground", "plant", "sky", "solid", "structural", "water",
]  # fmt: skip
CLASSES = THINGS + STUFF

# Thing ids 0..90 (the 91 COCO category slots, 11 of them unused) come in contiguous
# supercategory runs: (first fine id, last fine id, coarse name).
THING_RUNS = [
    (0, 0, "person"), (1, 8, "vehicle"), (9, 14, "outdoor"), (15, 24, "animal"), (25, 32, "accessory"),
    (33, 42, "sports"), (43, 50, "kitchen"), (51, 60, "food"), (61, 70, "furniture"),
    (71, 76, "electronic"), (77, 82, "appliance"), (83, 90, "indoor"),
]  # fmt: skip
# Stuff ids 91..181 in COCO-Stuff's label order, each with its supercategory.
STUFF_FINE = [
    ("banner", "textile"), ("blanket", "textile"), ("branch", "plant"), ("bridge", "building"),
    ("building-other", "building"), ("bush", "plant"), ("cabinet", "furniture-stuff"),
    ("cage", "structural"), ("cardboard", "rawmaterial"), ("carpet", "floor"),
    ("ceiling-other", "ceiling"), ("ceiling-tile", "ceiling"), ("cloth", "textile"),
    ("clothes", "textile"), ("clouds", "sky"), ("counter", "furniture-stuff"),
    ("cupboard", "furniture-stuff"), ("curtain", "textile"), ("desk-stuff", "furniture-stuff"),
    ("dirt", "ground"), ("door-stuff", "furniture-stuff"), ("fence", "structural"),
    ("floor-marble", "floor"), ("floor-other", "floor"), ("floor-stone", "floor"), ("floor-tile", "floor"),
    ("floor-wood", "floor"), ("flower", "plant"), ("fog", "water"), ("food-other", "food-stuff"),
    ("fruit", "food-stuff"), ("furniture-other", "furniture-stuff"), ("grass", "plant"),
    ("gravel", "ground"), ("ground-other", "ground"), ("hill", "solid"), ("house", "building"),
    ("leaves", "plant"), ("light", "furniture-stuff"), ("mat", "textile"), ("metal", "rawmaterial"),
    ("mirror-stuff", "furniture-stuff"), ("moss", "plant"), ("mountain", "solid"), ("mud", "ground"),
    ("napkin", "textile"), ("net", "structural"), ("paper", "rawmaterial"), ("pavement", "ground"),
    ("pillow", "textile"), ("plant-other", "plant"), ("plastic", "rawmaterial"), ("platform", "ground"),
    ("playingfield", "ground"), ("railing", "structural"), ("railroad", "ground"), ("river", "water"),
    ("road", "ground"), ("rock", "solid"), ("roof", "building"), ("rug", "textile"),
    ("salad", "food-stuff"), ("sand", "ground"), ("sea", "water"), ("shelf", "furniture-stuff"),
    ("sky-other", "sky"), ("skyscraper", "building"), ("snow", "ground"), ("solid-other", "solid"),
    ("stairs", "furniture-stuff"), ("stone", "solid"), ("straw", "plant"),
    ("structural-other", "structural"), ("table", "furniture-stuff"), ("tent", "building"),
    ("textile-other", "textile"), ("towel", "textile"), ("tree", "plant"), ("vegetable", "food-stuff"),
    ("wall-brick", "wall"), ("wall-concrete", "wall"), ("wall-other", "wall"), ("wall-panel", "wall"),
    ("wall-stone", "wall"), ("wall-tile", "wall"), ("wall-wood", "wall"), ("water-other", "water"),
    ("waterdrops", "water"), ("window-blind", "window"), ("window-other", "window"), ("wood", "solid"),
]  # fmt: skip


def fine_to_coarse() -> np.ndarray:
    """A 256-entry lookup table: stuffthingmaps id -> coarse class id, 255 elsewhere."""
    lut = np.full(256, IGNORE, np.uint8)
    for first, last, name in THING_RUNS:
        lut[first : last + 1] = CLASSES.index(name)
    for offset, (_, name) in enumerate(STUFF_FINE):
        lut[91 + offset] = CLASSES.index(name)
    return lut


def protocols() -> dict[str, Any]:
    """``stuff15``: thing pixels ignored, the 15 stuff classes renumbered 0..14."""
    return {"stuff15": {"classes": STUFF, "map": [IGNORE] * len(THINGS) + list(range(len(STUFF)))}}


def resize_crop(
    image: np.ndarray, label: np.ndarray, resize: int | None, crop: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """PiCIE's eval transform: shorter side to ``resize`` (torchvision's rounding), then a
    centred ``crop`` square; bilinear for the image, nearest for the label."""
    if resize:
        h, w = label.shape
        size = (resize, int(resize * h / w)) if w <= h else (int(resize * w / h), resize)  # (w, h)
        image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    if crop:
        h, w = label.shape
        if crop > min(h, w):
            raise UssegError(
                f"{NAME}: crop {crop} is larger than the resized image {w}x{h}; set resize >= crop"
            )
        top, left = round((h - crop) / 2), round((w - crop) / 2)  # Python rounding, as PiCIE
        image = image[top : top + crop, left : left + crop]
        label = label[top : top + crop, left : left + crop]
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def download(raw: Path, params: CocoStuffParams) -> None:
    splits = chosen_splits(params, NAME, SPLITS)
    sources = []
    for s in splits:
        sources.append(source(NAME, f"{s}2017", params, include=[f"{s}2017/"], help=HELP["images"]))
        sources.append(source(NAME, f"curated_{s}2017", params, help=HELP["curated"]))
    maps = [f"{s}2017/" for s in splits]
    sources.append(source(NAME, "stuffthingmaps", params, include=maps, help=HELP["stuffthingmaps"]))
    download_sources(raw, sources)


def _samples(raw: Path, split: str, params: CocoStuffParams, lut: np.ndarray) -> Iterator[Sample]:
    ids = read_ids(downloaded(raw, f"curated_{split}2017"), f"{NAME} curated list of {split}2017")
    images = require_dir(raw / f"{split}2017" / f"{split}2017", f"{NAME} archive {split}2017")
    labels = require_dir(raw / "stuffthingmaps" / f"{split}2017", f"{NAME} archive stuffthingmaps")
    for image_id in ids:
        image_path, label_path = images / f"{image_id}.jpg", labels / f"{image_id}.png"
        for path in (image_path, label_path):
            if not path.is_file():
                raise UssegError(f"{NAME}: curated image {image_id!r} of {split}2017 has no file {path}")
        yield Sample(id=image_id, load=partial(_load, image_id, image_path, label_path, params, lut),
                     sources=(image_path, label_path))


def _load(
    image_id: str, image_path: Path, label_path: Path, params: CocoStuffParams, lut: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One sample's pixels and 27-class label (decoded only when prepare has not written it yet)."""
    image, fine = resize_crop(
        read_rgb(image_path, image_id),
        read_label(label_path, image_id),
        params.resize,
        params.crop,
    )
    return image, lut[fine]


def prepare(raw: Path | None, out: Path, params: CocoStuffParams) -> None:
    """Curated ids of each chosen split, resized and cropped, labels mapped to 27 classes."""
    manifest = raw_sources(raw, NAME)
    splits = chosen_splits(params, NAME, SPLITS)
    lut = fine_to_coarse()
    transform = {"resize": params.resize, "crop": params.crop}
    writer = PreparedWriter(
        out, NAME, CLASSES, has_background=False, protocols=protocols(), source={"raw": manifest, **transform}
    )
    writer.write((s, _samples(raw, s, params, lut)) for s in splits)
