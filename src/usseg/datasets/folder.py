"""The `folder` dataset: any folder of images, optional masks and a class list.

This is how a user points the DAG at their own data. Masks are single-channel PNGs
(palette PNGs work: their indices are the class ids) named like the image; 255 = ignore.
An image id is the file's stem, so two files sharing a stem (``a.jpg`` + ``a.png``, or a
mask left in the image folder) are refused rather than one of them silently dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from usseg.artifacts.prepared import PreparedWriter, Sample, read_label
from usseg.datasets.params import DatasetParams
from usseg.errors import UssegError

NEEDS_DOWNLOAD = False
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True, kw_only=True)
class FolderParams(DatasetParams):
    images: str  # the image folder
    masks: str | None = None  # mask folder: {id}.png per image; None = unlabelled
    ids: str | None = None  # a list file of the ids to take; None = every image
    classes: tuple[str, ...] = ()  # the class names, by id (required with masks)
    has_background: bool = True


PARAMS = FolderParams


def _image_files(folder: Path) -> list[Path]:
    """The folder's image files by name (none when the folder is missing)."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def _read_ids(ids_file: Path) -> list[str]:
    if not ids_file.is_file():
        raise UssegError(f"folder dataset: ids list {ids_file} does not exist")
    return [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]


def _images(folder: Path, ids_file: Path | None) -> list[Path]:
    if not folder.is_dir():
        raise UssegError(f"folder dataset: image folder {folder} does not exist")
    by_stem: dict[str, Path] = {}
    for path in _image_files(folder):
        if path.stem in by_stem:
            raise UssegError(
                f"folder dataset: {by_stem[path.stem]} and {path} share the image id {path.stem!r}; "
                "keep one image per name (masks go in their own `masks` folder)"
            )
        by_stem[path.stem] = path
    if ids_file is None:
        return list(by_stem.values())
    ids = _read_ids(ids_file)
    missing = [i for i in ids if i not in by_stem]
    if missing:
        raise UssegError(f"folder dataset: {ids_file} lists ids with no image in {folder}: {missing[:5]}")
    return [by_stem[i] for i in ids]


def _mask_path(masks: Path, image: Path) -> Path:
    path = masks / f"{image.stem}.png"
    if not path.is_file():
        raise UssegError(f"folder dataset: image {image.stem!r} has no mask {path}")
    return path


def _sources(params: FolderParams) -> tuple[list[Path], Path | None]:
    """The images to prepare and the mask folder, checked against each other."""
    images_dir = Path(params.images)
    masks = Path(params.masks) if params.masks else None
    if masks is not None and masks.resolve() == images_dir.resolve():
        raise UssegError(
            f"folder dataset: the mask folder {masks} is the image folder {images_dir}; "
            "put the masks in a folder of their own"
        )
    images = _images(images_dir, Path(params.ids) if params.ids else None)
    if not images:
        raise UssegError(f"folder dataset: no images in {images_dir}")
    return images, masks


def input_files(params: FolderParams) -> list[Path]:
    """The existing files prepare reads (images, their masks, the ids list): workflow inputs.

    Listing files, not folders, lets Snakemake (and DVC) see an image or mask changed,
    added or removed, so the dataset is prepared again. It checks nothing on purpose: an
    error here would make Snakemake keep an existing prepared folder; prepare reports it.
    """
    ids_file = Path(params.ids) if params.ids else None
    images = _image_files(Path(params.images))
    if ids_file is not None and ids_file.is_file():
        wanted = set(_read_ids(ids_file))
        images = [p for p in images if p.stem in wanted]
    files = list(images)
    if params.masks:
        files += [m for p in images if (m := Path(params.masks) / f"{p.stem}.png").is_file()]
    if ids_file is not None and ids_file.is_file():
        files.append(ids_file)
    return list(dict.fromkeys(files))


def _samples(images: list[Path], masks: Path | None) -> Iterator[Sample]:
    for path in images:
        label = None
        if masks is not None:
            label = read_label(_mask_path(masks, path), path.stem)
        yield Sample(id=path.stem, image=path, label=label)


def prepare(raw: Path | None, out: Path, params: FolderParams) -> None:
    """Prepare ``images`` (+ ``masks``, ``classes``, ``ids``) as one split."""
    images, masks = _sources(params)
    classes = list(params.classes)
    if masks is not None and not classes:
        raise UssegError("folder dataset: masks are given, so `classes` must list the class names")
    writer = PreparedWriter(
        out,
        params.name or "folder",
        classes,
        has_background=params.has_background,
        source={"images": params.images, "masks": str(masks) if masks else None},
    )
    writer.write([(params.split, _samples(images, masks))])
