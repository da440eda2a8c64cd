"""The `folder` dataset: any folder of images, optional masks and a class list.

This is how a user points the DAG at their own data. Masks are single-channel PNGs
(palette PNGs work: their indices are the class ids) named like the image; 255 = ignore.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from usseg.datasets.prepared import PreparedWriter, Sample, read_label
from usseg.errors import UssegError

NEEDS_DOWNLOAD = False
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


def _images(folder: Path, ids_file: Path | None) -> list[Path]:
    if not folder.is_dir():
        raise UssegError(f"folder dataset: image folder {folder} does not exist")
    by_stem = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    if ids_file is None:
        return list(by_stem.values())
    ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    missing = [i for i in ids if i not in by_stem]
    if missing:
        raise UssegError(f"folder dataset: {ids_file} lists ids with no image in {folder}: {missing[:5]}")
    return [by_stem[i] for i in ids]


def _samples(images: list[Path], masks: Path | None) -> Iterator[Sample]:
    for path in images:
        label = None
        if masks is not None:
            mask_path = masks / f"{path.stem}.png"
            if not mask_path.is_file():
                raise UssegError(f"folder dataset: image {path.stem!r} has no mask {mask_path}")
            label = read_label(mask_path, path.stem)
        yield Sample(id=path.stem, image=path, label=label)


def prepare(raw: Path | None, out: Path, params: dict[str, Any]) -> None:
    """Prepare ``params['images']`` (+ ``masks``, ``classes``, ``ids``) as one split."""
    images = _images(Path(params["images"]), Path(params["ids"]) if params.get("ids") else None)
    if not images:
        raise UssegError(f"folder dataset: no images in {params['images']}")
    masks = Path(params["masks"]) if params.get("masks") else None
    classes = params.get("classes") or []
    if masks is not None and not classes:
        raise UssegError("folder dataset: masks are given, so `classes` must list the class names")
    writer = PreparedWriter(
        out,
        params.get("name", "folder"),
        classes,
        has_background=bool(params.get("has_background", True)),
        source={"images": str(params["images"]), "masks": str(masks) if masks else None},
    )
    writer.write([(params.get("split", "val"), _samples(images, masks))])
