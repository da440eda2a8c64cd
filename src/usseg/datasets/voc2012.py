"""PASCAL VOC 2012 segmentation: background + 20 object classes, 255 = void.

From ``VOCtrainval_11-May-2012.tar``: ``VOCdevkit/VOC2012/JPEGImages/{id}.jpg``,
``SegmentationClass/{id}.png`` (palette PNGs whose indices are the class ids) and the
split lists ``ImageSets/Segmentation/{train,val}.txt`` (val: 1,449 images).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from usseg.artifacts.prepared import PreparedWriter, Sample, read_label
from usseg.datasets.benchmark import chosen_splits, raw_sources, read_ids, require_dir
from usseg.datasets.download import download_sources, source
from usseg.datasets.params import BenchmarkParams
from usseg.errors import UssegError

NAME = "voc2012"
NEEDS_DOWNLOAD = True
PARAMS = BenchmarkParams
ARCHIVE = "trainval"
DEVKIT = "VOCdevkit/VOC2012"
SPLITS = ("train", "val")
HELP = "the PASCAL VOC 2012 page http://host.robots.ox.ac.uk/pascal/VOC/voc2012/ (training/validation data)"
CLASSES = [
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
]  # fmt: skip


def download(raw: Path, params: BenchmarkParams) -> None:
    download_sources(raw, [source(NAME, ARCHIVE, params, help=HELP)])


def _samples(root: Path, split: str) -> Iterator[Sample]:
    ids = read_ids(root / "ImageSets" / "Segmentation" / f"{split}.txt", f"{NAME} split {split!r}")
    for image_id in ids:
        image = root / "JPEGImages" / f"{image_id}.jpg"
        mask = root / "SegmentationClass" / f"{image_id}.png"
        for path in (image, mask):
            if not path.is_file():
                raise UssegError(f"{NAME}: image {image_id!r} of split {split!r} has no file {path}")
        yield Sample(id=image_id, image=image, label=read_label(mask, image_id))


def prepare(raw: Path | None, out: Path, params: BenchmarkParams) -> None:
    """Prepare the chosen splits; mask indices are already the class ids (255 = void)."""
    manifest = raw_sources(raw, NAME)
    splits = chosen_splits(params, NAME, SPLITS)
    root = require_dir(raw / ARCHIVE / DEVKIT, f"{NAME} archive {ARCHIVE!r}")
    writer = PreparedWriter(out, NAME, CLASSES, has_background=True, source={"raw": manifest})
    writer.write((split, _samples(root, split)) for split in splits)
