"""SUIM underwater imagery: 8 classes from RGB colour-coded BMP masks.

Official archives ``TEST.zip`` (110 images) and ``train_val.zip`` (1,525), each holding
``<folder>/images/{id}.jpg`` and ``<folder>/masks/{id}.bmp``. A mask colour is three bits:
each channel thresholded at 128, R the high bit: BW=000 HD=001 PF=010 WR=011 RO=100
RI=101 FV=110 SR=111, so the bit pattern read as a number is the class id. Per-class
sub-folders of ``TEST/masks/`` are ignored (the combined BMPs are the ground truth).

SUIM has no void label. DatUS^2 merges BW, PF and SR into one "rest" class and scores
6 classes: offered as the ``suim6`` protocol beside the default 8.

SUIM is shared through a Google Drive folder that scripts often cannot reach and has no
published checksums: the user downloads the zips, sets ``archives.<key>.path`` and pins
their sha256 (see docs/datasets.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from usseg.artifacts.prepared import PreparedWriter, Sample, read_rgb
from usseg.datasets.benchmark import chosen_splits, raw_sources
from usseg.datasets.download import download_sources, source
from usseg.datasets.params import BenchmarkParams
from usseg.errors import UssegError

NAME = "suim"
NEEDS_DOWNLOAD = True
CLASSES = ["BW", "HD", "PF", "WR", "RO", "RI", "FV", "SR"]
PALETTE = [[255 * ((i >> 2) & 1), 255 * ((i >> 1) & 1), 255 * (i & 1)] for i in range(8)]
# split -> (archive key, folder inside the archive)
SPLITS = {"test": ("test", "TEST"), "trainval": ("train_val", "train_val")}
SUIM6 = ["HD", "RO", "FV", "RI", "WR", "rest"]
HELP = (
    "the official SUIM page https://irvlab.cs.umn.edu/resources/suim-dataset (its Google Drive "
    "folder https://drive.google.com/drive/folders/10KMK0rNB43V2g30NcA1RYipL535DuZ-h holds "
    "TEST.zip and train_val.zip)"
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True, kw_only=True)
class SuimParams(BenchmarkParams):
    # masks whose size differs from their image: nearest resize, skip the image, or fail
    size_mismatch: str = "resize"


PARAMS = SuimParams


def protocols() -> dict[str, Any]:
    """``suim6``: HD, RO, FV, RI, WR kept; BW, PF and SR merged into ``rest``."""
    return {
        "suim6": {
            "classes": SUIM6,
            "map": [SUIM6.index(c) if c in SUIM6 else SUIM6.index("rest") for c in CLASSES],
        }
    }


def decode_mask(rgb: np.ndarray) -> np.ndarray:
    """RGB colour code -> class id: channel bits (>= 128) read as R*4 + G*2 + B."""
    bits = (rgb >= 128).astype(np.uint8)
    return bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]


def download(raw: Path, params: SuimParams) -> None:
    splits = chosen_splits(params, NAME, SPLITS)
    download_sources(raw, [source(NAME, SPLITS[s][0], params, help=HELP) for s in splits])


def _split_dir(raw: Path, split: str) -> Path:
    """The folder holding ``images/`` and ``masks/`` (tolerates one extra top-level folder)."""
    key, folder = SPLITS[split]
    root = raw / key
    for cand in (root / folder, *sorted(root.glob(f"*/{folder}")), root):
        if (cand / "images").is_dir() and (cand / "masks").is_dir():
            return cand
    raise UssegError(f"{NAME} split {split!r}: no {folder}/images and {folder}/masks folders under {root}")


def _samples(folder: Path, split: str, mismatch: str, mismatched: list[str]) -> Iterator[Sample]:
    images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    masks = {p.stem: p for p in (folder / "masks").iterdir() if p.is_file() and p.suffix.lower() == ".bmp"}
    if not images:
        raise UssegError(f"{NAME} split {split!r}: no images in {folder / 'images'}")
    for path in images:
        if path.stem not in masks:
            raise UssegError(
                f"{NAME}: image {path.stem!r} ({path}) has no mask {folder / 'masks'}/{path.stem}.bmp"
            )
        with Image.open(path) as im:  # the size only; the writer decodes (or copies) the image
            width, height = im.size
        label = decode_mask(read_rgb(masks[path.stem], path.stem))
        if label.shape != (height, width):
            mismatched.append(path.stem)
            if mismatch == "skip":
                continue
            if mismatch == "error":
                raise UssegError(
                    f"{NAME}: mask {masks[path.stem]} is {label.shape[1]}x{label.shape[0]} but image "
                    f"{path.stem!r} is {width}x{height} (size_mismatch: resize|skip|error)"
                )
            label = np.asarray(Image.fromarray(label).resize((width, height), Image.NEAREST))
        yield Sample(id=path.stem, image=path, label=label)


def prepare(raw: Path | None, out: Path, params: SuimParams) -> None:
    """Decode the masks of the chosen splits; ``size_mismatch`` says what to do with masks
    whose size differs from their image (some train_val masks do): resize (nearest), skip, error."""
    manifest = raw_sources(raw, NAME)
    splits = chosen_splits(params, NAME, SPLITS)
    mismatch = params.size_mismatch
    mismatched: dict[str, list[str]] = {s: [] for s in splits}  # filled while writing, saved in meta
    source_meta = {"raw": manifest, "size_mismatch": {"policy": mismatch, "ids": mismatched}}
    writer = PreparedWriter(
        out, NAME, CLASSES, has_background=True, palette=PALETTE, protocols=protocols(), source=source_meta
    )
    writer.write((s, _samples(_split_dir(raw, s), s, mismatch, mismatched[s])) for s in splits)
