"""The project's one prepared dataset form, read and written here only.

Every dataset (generated demo, a user's folder, the real benchmarks) is prepared into
this form so every method runs unchanged on every dataset. See docs/architecture.md.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from usseg.atomic import atomic_dir, write_json
from usseg.errors import UssegError

IGNORE = 255
CSV_FIELDS = ("id", "image", "label", "height", "width")


@dataclass(frozen=True)
class Record:
    """One image of a split, with paths resolved against the dataset folder."""

    id: str
    image_path: Path
    label_path: Path | None
    height: int
    width: int


def default_palette(n: int) -> list[list[int]]:
    """The PASCAL VOC colour map, which every USS paper's figures use."""
    palette = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette.append([r, g, b])
    return palette


def read_rgb(path: Path, image_id: str | None = None) -> np.ndarray:
    """Decode any image to 8-bit RGB (grey, RGBA, CMYK, palette and 16-bit converted)."""
    name = image_id or path.stem
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):
                # By bit depth, as Pillow reads 16-bit RGB (high byte): a dark image stays dark.
                arr = np.asarray(im, dtype=np.int64).clip(0, 65535)
                im = Image.fromarray((arr >> 8).astype(np.uint8))
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                background = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(background, im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise UssegError(f"image {name!r}: cannot decode {path}: {exc}") from exc
    return rgb


def read_label(path: Path, image_id: str | None = None) -> np.ndarray:
    """Read a uint8 label map (palette PNGs give their indices, not colours)."""
    name = image_id or path.stem
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P"):
                raise UssegError(
                    f"label of {name!r}: {path} has mode {im.mode}; expected a single-channel "
                    "uint8 map of class ids"
                )
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise UssegError(f"label of {name!r}: cannot decode {path}: {exc}") from exc


def write_label(path: Path, label: np.ndarray) -> None:
    """Save a uint8 label map as PNG."""
    if label.dtype != np.uint8:
        raise UssegError(f"label {path}: dtype {label.dtype}, expected uint8")
    Image.fromarray(label, mode="L").save(path)


class PreparedDataset:
    """Read access to ``data/prepared/{dataset}``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise UssegError(f"{self.root} is not a prepared dataset: {meta_path} is missing")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    @property
    def ignore_index(self) -> int:
        return int(self.meta.get("ignore_index", IGNORE))

    def protocols(self) -> dict[str, dict[str, Any]]:
        """Class protocols: the default one plus any alternative class sets."""
        default = {"classes": self.classes, "map": None}
        return {"default": default, **self.meta.get("protocols", {})}

    def records(self, split: str) -> list[Record]:
        path = self.root / f"{split}.csv"
        if not path.is_file():
            have = sorted(p.stem for p in self.root.glob("*.csv"))
            raise UssegError(f"dataset {self.name!r} has no split {split!r} (splits: {have})")
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        if not rows:
            raise UssegError(f"dataset {self.name!r}: split {split!r} ({path}) is empty")
        return [
            Record(
                id=row["id"],
                image_path=self.root / row["image"],
                label_path=self.root / row["label"] if row["label"] else None,
                height=int(row["height"]),
                width=int(row["width"]),
            )
            for row in rows
        ]

    def load_image(self, record: Record) -> np.ndarray:
        image = read_rgb(record.image_path, record.id)
        if image.shape[:2] != (record.height, record.width):
            raise UssegError(
                f"image {record.id!r}: {record.image_path} is {image.shape[1]}x{image.shape[0]}, "
                f"index says {record.width}x{record.height}"
            )
        return image

    def load_label(self, record: Record) -> np.ndarray | None:
        if record.label_path is None:
            return None
        label = read_label(record.label_path, record.id)
        if label.shape != (record.height, record.width):
            raise UssegError(
                f"label of {record.id!r}: {record.label_path} is {label.shape[1]}x{label.shape[0]}, "
                f"image is {record.width}x{record.height}"
            )
        return label


@dataclass
class Sample:
    """One image to prepare: where its pixels come from and its label map, if any."""

    id: str
    image: Path | np.ndarray
    label: np.ndarray | None


class PreparedWriter:
    """Builds a prepared dataset in ``<root>.partial`` and renames it when complete."""

    def __init__(
        self,
        root: str | Path,
        name: str,
        classes: Sequence[str],
        has_background: bool,
        palette: Sequence[Sequence[int]] | None = None,
        protocols: dict[str, Any] | None = None,
        source: dict[str, Any] | None = None,
    ) -> None:
        self.root = Path(root)
        self.meta: dict[str, Any] = {
            "name": name,
            "classes": list(classes),
            "palette": [list(c) for c in (palette or default_palette(len(classes)))],
            "ignore_index": IGNORE,
            "has_background": has_background,
            "splits": {},
            "protocols": protocols or {},
            "source": source or {},
        }
        self._splits: dict[str, list[dict[str, Any]]] = {}

    def add_split(self, split: str, samples: Iterable[Sample], tmp: Path) -> None:
        """Write a split's images and labels into the partial folder ``tmp``."""
        (tmp / "images").mkdir(exist_ok=True)
        (tmp / "labels").mkdir(exist_ok=True)
        rows = []
        seen: set[str] = set()
        num_classes = len(self.meta["classes"])
        for sample in samples:
            if sample.id in seen:
                raise UssegError(f"split {split!r}: image id {sample.id!r} appears twice")
            seen.add(sample.id)
            rows.append(self._write_sample(sample, tmp, num_classes))
        if not rows:
            raise UssegError(f"dataset {self.meta['name']!r}: split {split!r} has no images")
        self._splits[split] = rows
        self.meta["splits"][split] = len(rows)

    def _write_sample(self, sample: Sample, tmp: Path, num_classes: int) -> dict[str, Any]:
        image_rel = f"images/{sample.id}.png"
        if isinstance(sample.image, Path):
            rgb = read_rgb(sample.image, sample.id)
            ext = sample.image.suffix.lower()
            if ext in (".jpg", ".jpeg") and _is_plain_rgb_jpeg(sample.image):
                image_rel = f"images/{sample.id}.jpg"
                shutil.copyfile(sample.image, tmp / image_rel)
            else:
                Image.fromarray(rgb).save(tmp / image_rel)
        else:
            rgb = sample.image
            Image.fromarray(rgb).save(tmp / image_rel)
        height, width = rgb.shape[:2]
        label_rel = ""
        if sample.label is not None:
            if sample.label.shape != (height, width):
                raise UssegError(
                    f"image {sample.id!r}: mask is {sample.label.shape[1]}x{sample.label.shape[0]} "
                    f"but the image is {width}x{height}"
                )
            bad = (sample.label >= num_classes) & (sample.label != IGNORE)
            if bad.any():
                raise UssegError(
                    f"image {sample.id!r}: mask has class ids {sorted(set(sample.label[bad].tolist()))} "
                    f"outside 0..{num_classes - 1} (and 255 = ignore)"
                )
            label_rel = f"labels/{sample.id}.png"
            write_label(tmp / label_rel, sample.label.astype(np.uint8))
        return {"id": sample.id, "image": image_rel, "label": label_rel, "height": height, "width": width}

    def write(self, build: "Iterable[tuple[str, Iterable[Sample]]]") -> None:
        """Prepare every (split, samples) pair, then publish the folder atomically."""
        with atomic_dir(self.root) as tmp:
            for split, samples in build:
                self.add_split(split, samples, tmp)
            for split, rows in self._splits.items():
                with (tmp / f"{split}.csv").open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                    writer.writeheader()
                    writer.writerows(rows)
            write_json(tmp / "meta.json", self.meta)


def _is_plain_rgb_jpeg(path: Path) -> bool:
    """JPEGs already in 8-bit RGB are copied byte for byte (no re-encoding loss)."""
    with Image.open(path) as im:
        return im.format == "JPEG" and im.mode == "RGB"
