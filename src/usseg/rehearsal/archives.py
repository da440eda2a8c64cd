"""The benchmark archives under their official file names and internal layouts.

Each builder writes what the dataset's adapter reads from the real release (docs/datasets.md):
the same member paths, mask encodings, list files and annotation formats, with a few stand-in
pictures per split. Archives are byte-for-byte reproducible (fixed member order, times and
modes), so their sha256 can be pinned like a real release's.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from usseg.artifacts.prepared import default_palette
from usseg.datasets import suim, voc2012
from usseg.rehearsal.images import bmp, jpeg, picture, png, relabel

ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip member can carry

# COCO's 80 thing categories (id, name): instances_*2017.json lists exactly these.
COCO_THINGS = [
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"),
    (7, "train"), (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"),
    (13, "stop sign"), (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"),
    (19, "horse"), (20, "sheep"), (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"),
    (25, "giraffe"), (27, "backpack"), (28, "umbrella"), (31, "handbag"), (32, "tie"),
    (33, "suitcase"), (34, "frisbee"), (35, "skis"), (36, "snowboard"), (37, "sports ball"),
    (38, "kite"), (39, "baseball bat"), (40, "baseball glove"), (41, "skateboard"),
    (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"), (47, "cup"),
    (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"),
    (59, "pizza"), (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"),
    (65, "bed"), (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"),
    (75, "remote"), (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"),
    (80, "toaster"), (81, "sink"), (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"),
    (87, "scissors"), (88, "teddy bear"), (89, "hair drier"), (90, "toothbrush"),
]  # fmt: skip


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, ZIP_TIME)
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[name])
    return path


def write_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return path


def _cycle(values: list[int], start: int, n: int = 4) -> list[int]:
    return [values[(start + i) % len(values)] for i in range(n)]


def voc2012_archive(out: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """``VOCtrainval_11-May-2012.tar``: JPEGImages, palette SegmentationClass with 255 borders,
    ImageSets/Segmentation/{train,val,trainval}.txt, and images that have no segmentation."""
    root, files, ids = voc2012.DEVKIT, {}, {}
    index = 0
    for split, n in counts.items():
        ids[split] = []
        for _ in range(n):
            image_id = f"2008_{index:06d}"
            rgb, shapes = picture(seed, index)
            label = relabel(shapes, 0, _cycle(list(range(1, 21)), 4 * index))
            files[f"{root}/JPEGImages/{image_id}.jpg"] = jpeg(rgb)
            files[f"{root}/SegmentationClass/{image_id}.png"] = png(label, default_palette(256))
            ids[split].append(image_id)
            index += 1
    files[f"{root}/JPEGImages/2012_999999.jpg"] = jpeg(picture(seed, index)[0])  # detection-only image
    for split, names in {**ids, "trainval": ids.get("train", []) + ids.get("val", [])}.items():
        files[f"{root}/ImageSets/Segmentation/{split}.txt"] = "".join(f"{n}\n" for n in names).encode()
    return {"trainval": write_tar(out / "VOCtrainval_11-May-2012.tar", files)}


def _coco_ids(split: str, n: int) -> list[int]:
    return [(1 if split == "val" else 2) * 100_000 + 7 * i + 1 for i in range(n)]


def coco_images(out: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """``val2017.zip`` / ``train2017.zip``: ``{split}2017/{id:012d}.jpg``, plus images the
    curated lists leave out."""
    paths = {}
    for split, n in counts.items():
        files = {
            f"{split}2017/{image_id:012d}.jpg": jpeg(picture(seed, image_id)[0])
            for image_id in _coco_ids(split, n + 1)  # the last one is in no curated list
        }
        paths[f"{split}2017"] = write_zip(out / f"{split}2017.zip", files)
    return paths


def cocostuff_maps(out: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """``stuffthingmaps_trainval2017.zip`` (grey PNGs of fine ids 0..181, 255 unlabelled) and
    PiCIE's curated lists ``Coco164kFull_Stuff_Coarse_7.txt`` of each split."""
    things = list(range(91))
    stuff = list(range(91, 182))
    maps, paths = {}, {}
    for split, n in counts.items():
        image_ids = _coco_ids(split, n + 1)
        for image_id in image_ids:
            shapes = picture(seed, image_id)[1]
            maps[f"{split}2017/{image_id:012d}.png"] = png(
                relabel(shapes, stuff[image_id % len(stuff)], _cycle(things, image_id))
            )
        folder = out / f"curated_{split}2017"
        folder.mkdir(parents=True, exist_ok=True)
        curated = folder / "Coco164kFull_Stuff_Coarse_7.txt"
        curated.write_text("".join(f"{i:012d}\n" for i in image_ids[:n]))
        paths[f"curated_{split}2017"] = curated
    paths["stuffthingmaps"] = write_zip(out / "stuffthingmaps_trainval2017.zip", maps)
    return paths


def _rle(mask: np.ndarray) -> dict[str, object]:
    """Uncompressed COCO RLE: column-major run lengths, starting with a run of zeros."""
    flat = mask.T.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"counts": np.diff(np.concatenate([[0], change])).tolist(), "size": list(mask.shape)}


def coco_annotations(out: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """``annotations_trainval2017.zip``: ``annotations/instances_{split}2017.json`` with the
    80 categories, one RLE instance per shape, a crowd region and an image without instances."""
    categories = [{"id": i, "name": name, "supercategory": "thing"} for i, name in COCO_THINGS]
    files = {}
    for split, n in counts.items():
        images, anns = [], []
        for k, image_id in enumerate(_coco_ids(split, n)):
            shapes = picture(seed, image_id)[1]
            h, w = shapes.shape
            images.append({"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w})
            if k == n - 1 and n > 1:
                continue  # an image without instances is all background
            for c in range(1, 5):
                mask = shapes == c
                if mask.any():
                    cat = COCO_THINGS[(image_id + c) % len(COCO_THINGS)][0]
                    anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cat,
                                 "segmentation": _rle(mask), "area": float(mask.sum()), "iscrowd": 0,
                                 "bbox": [0.0, 0.0, float(w), float(h)]})  # fmt: skip
            crowd = np.zeros((h, w), bool)
            crowd[: h // 6, : w // 3] = True
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "segmentation": _rle(crowd), "area": float(crowd.sum()), "iscrowd": 1,
                         "bbox": [0.0, 0.0, float(w // 3), float(h // 6)]})  # fmt: skip
        doc = {"images": images, "annotations": anns, "categories": categories}
        files[f"annotations/instances_{split}2017.json"] = json.dumps(doc).encode()
        files[f"annotations/captions_{split}2017.json"] = b'{"annotations": []}'  # not read
    return {"annotations": write_zip(out / "annotations_trainval2017.zip", files)}


def _suim_colours(codes: np.ndarray, seed: int) -> np.ndarray:
    """Class codes -> SUIM's RGB colours, off by a little as the real BMPs are."""
    bits = np.stack([(codes >> 2) & 1, (codes >> 1) & 1, codes & 1], axis=-1)
    noise = np.random.default_rng(seed).integers(0, 60, bits.shape)
    return np.where(bits == 1, 255 - noise, noise).astype(np.uint8)


def suim_archives(out: Path, counts: dict[str, int], seed: int) -> dict[str, Path]:
    """``TEST.zip`` (``TEST/images/*.jpg``, ``TEST/masks/*.bmp`` and per-class mask folders) and
    ``train_val.zip`` (``train_val/images``, ``train_val/masks``)."""
    paths = {}
    for split, n in counts.items():
        key, folder = suim.SPLITS[split]
        files = {}
        for i in range(n):
            index = 10_000 * (split == "trainval") + i
            rgb, shapes = picture(seed, index)
            codes = relabel(shapes, index % 8, _cycle(list(range(8)), index + 1), void=None)
            stem = f"d_r_{100 + index}_"
            files[f"{folder}/images/{stem}.jpg"] = jpeg(rgb)
            files[f"{folder}/masks/{stem}.bmp"] = bmp(_suim_colours(codes, index))
            if split == "test":  # TEST ships per-class masks too; the adapter ignores them
                files[f"{folder}/masks/FV/{stem}.bmp"] = bmp(_suim_colours((codes == 6) * 7, index))
        paths[key] = write_zip(out / f"{'TEST' if split == 'test' else 'train_val'}.zip", files)
    return paths


# dataset -> the builders of its files; each returns {archive key of params.yaml: path}
Builder = Callable[[Path, dict[str, int], int], dict[str, Path]]
BUILDERS: dict[str, list[Builder]] = {
    "voc2012": [voc2012_archive],
    "cocostuff27": [coco_images, cocostuff_maps],
    "coco81": [coco_images, coco_annotations],
    "suim": [suim_archives],
}
