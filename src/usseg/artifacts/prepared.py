"""The project's one prepared dataset form, read and written here only.

Every dataset (generated demo, a user's folder, the real benchmarks) is prepared into
this form so every method runs unchanged on every dataset. See docs/architecture.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from usseg.artifacts.atomic import atomic_dir, atomic_file, clear_temp_files, partial_path, write_json
from usseg.artifacts.digest import file_digest
from usseg.errors import UssegError

log = logging.getLogger(__name__)
IGNORE = 255
RESUME_FILE = ".resume.json"  # fingerprint of the writer that made a partial folder
SOURCES_DIR = ".sources"  # in a partial folder: each written sample's source digest
# sha256: of the image file and the label file as written, so the index's own digest
# (what features, refine, datus2 and context_aware fingerprint) follows every image's bytes
CSV_FIELDS = ("id", "image", "label", "height", "width", "sha256")


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
    """Save a uint8 label map as PNG (renamed into place when complete)."""
    if label.dtype != np.uint8:
        raise UssegError(f"label {path}: dtype {label.dtype}, expected uint8")
    with atomic_file(path, "wb") as fh:
        Image.fromarray(label, mode="L").save(fh, format="PNG")


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
    """One image to prepare: where its pixels come from and its label map, if any.

    An adapter whose samples cost time to make (decoding, resizing, rasterising) gives
    ``load`` instead, returning (image, label): a resumed prepare never calls it for the
    images already written. ``sources`` names the files ``load`` reads: a resumed prepare
    keeps a written image only while their bytes (and the image file's or arrays' given
    here) are those it was made from.
    """

    id: str
    image: Path | np.ndarray | None = None
    label: np.ndarray | None = None
    load: Callable[[], tuple[Path | np.ndarray, np.ndarray | None]] | None = None
    sources: tuple[Path, ...] = ()

    def resolved(self) -> Sample:
        if self.load is None:
            return self
        image, label = self.load()
        return Sample(self.id, image, label, sources=self.sources)

    def source_digest(self) -> str:
        """sha256 of everything this sample's written bytes come from (without decoding)."""
        h = hashlib.sha256()
        for part in (self.image, self.label, *self.sources):
            if isinstance(part, Path):
                h.update(b"file" + bytes.fromhex(file_digest(part)))
            elif isinstance(part, np.ndarray):
                h.update(f"array{part.dtype}{part.shape}".encode() + np.ascontiguousarray(part).tobytes())
            else:
                h.update(b"none")
        return h.hexdigest()


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
        """Write a split's images and labels into the partial folder ``tmp`` (keeping those
        an interrupted run with the same fingerprint already wrote there)."""
        (tmp / "images").mkdir(exist_ok=True)
        (tmp / "labels").mkdir(exist_ok=True)
        (tmp / SOURCES_DIR).mkdir(exist_ok=True)
        rows = []
        seen: set[str] = set()
        num_classes = len(self.meta["classes"])
        for sample in samples:
            if sample.id in seen:
                raise UssegError(f"split {split!r}: image id {sample.id!r} appears twice")
            seen.add(sample.id)
            digest = sample.source_digest()
            done = _written_row(sample.id, tmp, digest)
            rows.append(done or self._write_sample(sample.resolved(), tmp, num_classes, digest))
        if not rows:
            raise UssegError(f"dataset {self.meta['name']!r}: split {split!r} has no images")
        self._splits[split] = rows
        self.meta["splits"][split] = len(rows)

    def _write_sample(self, sample: Sample, tmp: Path, num_classes: int, source_digest: str) -> dict[str, Any]:
        """Label, then the source digest, image last, each renamed into place: the image marks
        the sample done (from those sources)."""
        if sample.image is None:
            raise UssegError(f"image {sample.id!r}: the adapter gave no image")
        _forget(sample.id, tmp)
        image_rel = f"images/{sample.id}.png"
        copy_jpeg = False
        if isinstance(sample.image, Path):
            rgb = read_rgb(sample.image, sample.id)
            ext = sample.image.suffix.lower()
            if ext in (".jpg", ".jpeg") and _is_plain_rgb_jpeg(sample.image):
                image_rel, copy_jpeg = f"images/{sample.id}.jpg", True
        else:
            rgb = sample.image
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
        with atomic_file(_source_file(sample.id, tmp)) as fh:
            fh.write(source_digest)
        with atomic_file(tmp / image_rel, "wb") as fh:
            if copy_jpeg:
                assert isinstance(sample.image, Path)
                with sample.image.open("rb") as src:
                    shutil.copyfileobj(src, fh)
            else:
                Image.fromarray(rgb).save(fh, format="PNG")
        return _row(sample.id, image_rel, label_rel, height, width, tmp)

    def fingerprint(self) -> dict[str, Any]:
        """What every image's bytes depend on (the adapter puts its parameters in ``source``)."""
        meta = {key: value for key, value in self.meta.items() if key != "splits"}
        return json.loads(json.dumps(meta, sort_keys=True, default=str))

    def write(self, build: Iterable[tuple[str, Iterable[Sample]]]) -> None:
        """Prepare every (split, samples) pair, then publish the folder atomically.

        The images written so far stay in ``<root>.partial`` with the writer's fingerprint,
        so a killed prepare resumes there; a partial folder with another one is discarded.
        """
        marker = partial_path(self.root) / RESUME_FILE
        fingerprint = self.fingerprint()
        resume = marker.is_file() and json.loads(marker.read_text()) == fingerprint
        with atomic_dir(self.root, resume=resume) as tmp:
            clear_temp_files(tmp)
            if resume:
                log.info("resuming %s", tmp)
            write_json(marker, fingerprint)
            for split, samples in build:
                self.add_split(split, samples, tmp)
            for split, rows in self._splits.items():
                with (tmp / f"{split}.csv").open("w", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
                    writer.writeheader()
                    writer.writerows(rows)
            write_json(tmp / "meta.json", self.meta)
            shutil.rmtree(tmp / SOURCES_DIR, ignore_errors=True)
            marker.unlink()


def _source_file(image_id: str, tmp: Path) -> Path:
    return tmp / SOURCES_DIR / f"{image_id}.sha256"


def _forget(image_id: str, tmp: Path) -> None:
    """Remove what an earlier run wrote for ``image_id`` (its sources changed)."""
    for rel in (f"images/{image_id}.png", f"images/{image_id}.jpg", f"labels/{image_id}.png"):
        (tmp / rel).unlink(missing_ok=True)
    _source_file(image_id, tmp).unlink(missing_ok=True)


def _row(image_id: str, image_rel: str, label_rel: str, height: int, width: int, tmp: Path) -> dict[str, Any]:
    """A split index row; ``sha256`` covers the image's and the label's bytes as written."""
    h = hashlib.sha256(bytes.fromhex(file_digest(tmp / image_rel)))
    if label_rel:
        h.update(bytes.fromhex(file_digest(tmp / label_rel)))
    return {"id": image_id, "image": image_rel, "label": label_rel, "height": height, "width": width,
            "sha256": h.hexdigest()}  # fmt: skip


def _written_row(image_id: str, tmp: Path, source_digest: str) -> dict[str, Any] | None:
    """The index row of a sample an interrupted run finished from the same sources (its
    image file exists and its recorded source digest matches), else None."""
    recorded = _source_file(image_id, tmp)
    if not recorded.is_file() or recorded.read_text() != source_digest:
        return None
    for image_rel in (f"images/{image_id}.png", f"images/{image_id}.jpg"):
        if (tmp / image_rel).is_file():
            with Image.open(tmp / image_rel) as im:
                width, height = im.size
            label_rel = f"labels/{image_id}.png"
            label_rel = label_rel if (tmp / label_rel).is_file() else ""
            return _row(image_id, image_rel, label_rel, height, width, tmp)
    return None


def _is_plain_rgb_jpeg(path: Path) -> bool:
    """JPEGs already in 8-bit RGB are copied byte for byte (no re-encoding loss)."""
    with Image.open(path) as im:
        return im.format == "JPEG" and im.mode == "RGB"


def load_resized(dataset: PreparedDataset, record: Record, size: int, patch: int) -> np.ndarray:
    """Decode one image and warp it to ``size`` x ``size`` (the consumers invert the warp)."""
    if min(record.height, record.width) < patch:
        raise UssegError(
            f"image {record.id!r} ({record.image_path}) is {record.width}x{record.height}, "
            f"smaller than one {patch}x{patch} patch"
        )
    image = dataset.load_image(record)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), dtype=np.uint8)
