"""The four benchmarks end to end on tiny archives in their official layouts.

Each test builds the release's folder structure, file names, mask encoding and list
files from generated images, serves it as a file:// URL, and runs download -> verify ->
extract -> prepare, then checks class ids, ignore pixels and split sizes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from usseg.artifacts.prepared import PreparedDataset, default_palette
from usseg.datasets import coco81, cocostuff27, suim, voc2012
from usseg.datasets.registry import adapter
from usseg.job_args import build_typed

RNG = np.random.default_rng(0)


def _jpeg(h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png(arr: np.ndarray, palette: list[list[int]] | None = None) -> bytes:
    im = Image.fromarray(arr, "L")
    if palette is not None:  # a palette PNG, as VOC ships: the indices are the class ids
        im.putpalette([v for c in palette for v in c])
        assert im.mode == "P"
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _bmp(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, "BMP")
    return buf.getvalue()


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _spec(path: Path, algo: str = "md5") -> dict[str, Any]:
    digest = hashlib.new(algo, path.read_bytes()).hexdigest()
    return {"url": path.as_uri(), "mirror": None, "path": None, "checksum": f"{algo}:{digest}"}


def _run(module: Any, params: dict[str, Any], tmp_path: Path) -> PreparedDataset:
    raw, out = tmp_path / "raw", tmp_path / "prepared"
    typed = build_typed(module.PARAMS, params)
    module.download(raw, typed)
    module.prepare(raw, out, typed)
    return PreparedDataset(out)


def _ids_in(ds: PreparedDataset, split: str) -> set[int]:
    return set(np.unique(np.concatenate([ds.load_label(r).ravel() for r in ds.records(split)])).tolist())


def test_registry_knows_the_benchmarks() -> None:
    for name in ("voc2012", "cocostuff27", "coco81", "suim"):
        assert adapter(name).NEEDS_DOWNLOAD is True


# --- PASCAL VOC 2012 -----------------------------------------------------------------


def _voc_tar(tmp_path: Path) -> Path:
    root = "VOCdevkit/VOC2012"
    files: dict[str, bytes] = {}
    ids = {"train": ["2007_000032", "2007_000039"], "val": ["2007_000033", "2008_000123", "2011_003256"]}
    for k, image_id in enumerate(ids["train"] + ids["val"]):
        h, w = 40 + 3 * k, 50 + 2 * k
        mask = np.zeros((h, w), np.uint8)
        mask[5:20, 5:25] = [1, 15, 20, 3, 7][k]
        mask[4, 4:26] = 255  # the void border VOC draws around objects
        files[f"{root}/JPEGImages/{image_id}.jpg"] = _jpeg(h, w)
        files[f"{root}/SegmentationClass/{image_id}.png"] = _png(mask, default_palette(256))
    files[f"{root}/JPEGImages/2012_999999.jpg"] = _jpeg(30, 30)  # images without segmentation exist too
    for split, names in ids.items():
        files[f"{root}/ImageSets/Segmentation/{split}.txt"] = ("\n".join(names) + "\n").encode()
    return _tar(tmp_path / "VOCtrainval_11-May-2012.tar", files)


def test_voc2012_end_to_end(tmp_path: Path) -> None:
    archive = _voc_tar(tmp_path)
    params = {"split": "val", "splits": ["val", "train"], "archives": {"trainval": _spec(archive)}}
    ds = _run(voc2012, params, tmp_path)
    assert ds.meta["splits"] == {"val": 3, "train": 2}
    assert ds.classes[0] == "background" and ds.classes[20] == "tvmonitor" and len(ds.classes) == 21
    assert [r.id for r in ds.records("val")] == ["2007_000033", "2008_000123", "2011_003256"]
    assert _ids_in(ds, "val") == {0, 3, 7, 20, 255}
    assert _ids_in(ds, "train") == {0, 1, 15, 255}
    rec = ds.records("val")[0]
    assert ds.load_image(rec).shape == (46, 54, 3)
    assert ds.meta["source"]["raw"]["trainval"]["checksum"] == params["archives"]["trainval"]["checksum"]


def test_voc2012_split_must_be_prepared(tmp_path: Path) -> None:
    archive = _voc_tar(tmp_path)
    params = {"split": "val", "splits": ["train"], "archives": {"trainval": _spec(archive)}}
    with pytest.raises(Exception, match="not among the prepared splits"):
        _run(voc2012, params, tmp_path)


# --- SUIM ------------------------------------------------------------------------------


def _suim_rgb(codes: np.ndarray) -> np.ndarray:
    """Class codes -> the SUIM colours, with the off-by-a-bit noise real BMPs carry."""
    bits = np.stack([(codes >> 2) & 1, (codes >> 1) & 1, codes & 1], axis=-1).astype(np.int16)
    noise = RNG.integers(0, 100, bits.shape)
    return np.where(bits == 1, 255 - noise, noise).astype(np.uint8)


def _suim_zip(tmp_path: Path, folder: str, n: int, bad_size: int = -1) -> tuple[Path, list[np.ndarray]]:
    files, truth = {}, []
    for i in range(n):
        h, w = 36, 48
        codes = np.zeros((h, w), np.uint8)
        codes[:, : w // 2] = i % 8
        codes[10:20, 30:40] = (i + 3) % 8
        stem = f"d_r_{100 + i}_"
        files[f"{folder}/images/{stem}.jpg"] = _jpeg(h, w)
        mask_codes = np.pad(codes, ((0, 6), (0, 0)), mode="edge") if i == bad_size else codes
        files[f"{folder}/masks/{stem}.bmp"] = _bmp(_suim_rgb(mask_codes))
        files[f"{folder}/masks/FV/{stem}.bmp"] = _bmp(np.full((h, w, 3), 255, np.uint8))  # per-class: ignored
        truth.append(codes)
    name = "TEST.zip" if folder == "TEST" else "train_val.zip"
    return _zip(tmp_path / name, files), truth


def test_suim_end_to_end_decodes_colour_codes(tmp_path: Path) -> None:
    test_zip, truth = _suim_zip(tmp_path, "TEST", 8)
    params = {
        "split": "test",
        "splits": ["test"],
        "size_mismatch": "resize",
        "archives": {"test": _spec(test_zip, "sha256")},
    }
    ds = _run(suim, params, tmp_path)
    assert ds.meta["splits"] == {"test": 8}
    assert ds.classes == ["BW", "HD", "PF", "WR", "RO", "RI", "FV", "SR"]
    by_id = {r.id: ds.load_label(r) for r in ds.records("test")}
    for i, codes in enumerate(truth):
        np.testing.assert_array_equal(by_id[f"d_r_{100 + i}_"], codes)
    assert _ids_in(ds, "test") == set(range(8))  # no void in SUIM
    suim6 = ds.protocols()["suim6"]
    assert suim6["classes"] == ["HD", "RO", "FV", "RI", "WR", "rest"]
    assert suim6["map"] == [5, 0, 5, 4, 1, 3, 2, 5]  # BW, PF, SR -> rest
    assert ds.meta["palette"][1] == [0, 0, 255] and ds.meta["palette"][6] == [255, 255, 0]


@pytest.mark.parametrize(("policy", "count"), [("resize", 4), ("skip", 3)])
def test_suim_mismatched_mask_sizes(tmp_path: Path, policy: str, count: int) -> None:
    tv_zip, _ = _suim_zip(tmp_path, "train_val", 4, bad_size=2)
    params = {
        "split": "trainval",
        "splits": ["trainval"],
        "size_mismatch": policy,
        "archives": {"train_val": _spec(tv_zip)},
    }
    ds = _run(suim, params, tmp_path)
    assert ds.meta["splits"] == {"trainval": count}
    assert ds.meta["source"]["size_mismatch"]["ids"] == {"trainval": ["d_r_102_"]}


def test_suim_mismatched_mask_error_names_file(tmp_path: Path) -> None:
    tv_zip, _ = _suim_zip(tmp_path, "train_val", 3, bad_size=1)
    params = {
        "split": "trainval",
        "splits": ["trainval"],
        "size_mismatch": "error",
        "archives": {"train_val": _spec(tv_zip)},
    }
    with pytest.raises(Exception, match=r"d_r_101_\.bmp is 48x42 but image 'd_r_101_' is 48x36"):
        _run(suim, params, tmp_path)


# --- COCO-Stuff-27 ---------------------------------------------------------------------


def test_cocostuff27_end_to_end(tmp_path: Path) -> None:
    ids = ["000000000139", "000000000285", "000000000632"]
    fine = np.full((48, 64), 123, np.uint8)  # grass -> plant (22)
    fine[:, :20] = 0  # person -> 9
    fine[:, 44:] = 255  # unlabelled
    fine[20:28, 28:36] = 156  # sky-other -> sky (23)
    val_zip = _zip(tmp_path / "val2017.zip", {f"val2017/{i}.jpg": _jpeg(48, 64) for i in ids})
    maps = {f"val2017/{i}.png": _png(fine) for i in ids}
    maps["train2017/000000000009.png"] = _png(fine)  # the train half is not extracted for a val run
    maps_zip = _zip(tmp_path / "stuffthingmaps_trainval2017.zip", maps)
    curated = tmp_path / "Coco164kFull_Stuff_Coarse_7.txt"
    curated.write_text("\n".join(ids[:2]) + "\n")  # the curated list leaves 000000000632 out
    params = {
        "split": "val",
        "splits": ["val"],
        "resize": 32,
        "crop": 32,
        "archives": {
            "val2017": _spec(val_zip),
            "stuffthingmaps": _spec(maps_zip, "sha256"),
            "curated_val2017": _spec(curated, "sha256"),
        },
    }
    ds = _run(cocostuff27, params, tmp_path)
    assert ds.meta["splits"] == {"val": 2}
    assert [r.id for r in ds.records("val")] == ids[:2]
    assert not (tmp_path / "raw" / "stuffthingmaps" / "train2017").exists()
    rec = ds.records("val")[0]
    assert (rec.height, rec.width) == (32, 32) and ds.load_image(rec).shape == (32, 32, 3)
    label = ds.load_label(rec)
    assert set(np.unique(label).tolist()) == {9, 22, 23, 255}
    # 48x64 -> 32x42 (shorter side 32), centre crop left = round(10 / 2) = 5
    expected = cocostuff27.fine_to_coarse()[
        np.asarray(Image.fromarray(fine).resize((42, 32), Image.NEAREST))[:, 5:37]
    ]
    np.testing.assert_array_equal(label, expected)
    stuff15 = ds.protocols()["stuff15"]
    assert len(ds.classes) == 27 and ds.classes[:2] == ["electronic", "appliance"]
    assert stuff15["classes"][0] == "ceiling" and len(stuff15["classes"]) == 15
    assert stuff15["map"][9] == 255 and stuff15["map"][22] == 10


def test_fine_to_coarse_covers_all_182_ids() -> None:
    lut = cocostuff27.fine_to_coarse()
    assert (lut[:182] < 27).all() and (lut[182:] == 255).all()
    assert np.bincount(lut[:182], minlength=27).min() >= 1  # every coarse class has a fine id
    assert lut[0] == cocostuff27.CLASSES.index("person") and lut[181] == cocostuff27.CLASSES.index("solid")
    assert lut[91] == cocostuff27.CLASSES.index("textile")  # banner, the first stuff id


# --- COCO-81 ---------------------------------------------------------------------------


def _box(x: int, y: int, w: int, h: int) -> list[list[float]]:
    return [[x, y, x + w, y, x + w, y + h, x, y + h]]


def _rle(mask: np.ndarray) -> dict[str, Any]:
    """Uncompressed COCO RLE (column-major run lengths, starting with zeros)."""
    flat = mask.T.ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    return {"counts": counts, "size": list(mask.shape)}


def test_coco81_end_to_end_overlap_and_crowd(tmp_path: Path) -> None:
    h, w = 40, 60
    crowd = np.zeros((h, w), np.uint8)
    crowd[30:38, 0:60] = 1  # crosses the person box (rows 2..33) and open background
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 90, "name": "toothbrush"}]
    anns = [
        {
            "id": 7,
            "image_id": 1,
            "category_id": 18,
            "segmentation": _box(20, 10, 10, 10),
            "area": 100.0,
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 1,
            "segmentation": _box(10, 2, 40, 32),
            "area": 1280.0,
            "iscrowd": 0,
        },
        {"id": 9, "image_id": 1, "category_id": 90, "segmentation": _rle(crowd), "area": 480.0, "iscrowd": 1},
    ]
    images = [
        {"id": 1, "file_name": "000000000001.jpg", "height": h, "width": w},
        {"id": 2, "file_name": "000000000002.jpg", "height": 30, "width": 30},
    ]
    instances = json.dumps({"images": images, "annotations": anns, "categories": cats}).encode()
    ann_zip = _zip(tmp_path / "annotations_trainval2017.zip", {
        "annotations/instances_val2017.json": instances,
        "annotations/captions_val2017.json": b"{}",
    })  # fmt: skip
    val_zip = _zip(
        tmp_path / "val2017.zip",
        {f"val2017/{im['file_name']}": _jpeg(im["height"], im["width"]) for im in images},
    )
    params = {
        "split": "val",
        "splits": ["val"],
        "archives": {"annotations": _spec(ann_zip), "val2017": _spec(val_zip)},
    }
    ds = _run(coco81, params, tmp_path)
    assert ds.classes == ["background", "person", "dog", "toothbrush"]
    assert ds.meta["splits"] == {"val": 2}
    assert not (tmp_path / "raw" / "annotations" / "annotations" / "captions_val2017.json").exists()
    first, second = (ds.load_label(r) for r in ds.records("val"))
    assert first[15, 25] == 2  # the small dog is painted over the large person
    assert first[5, 15] == 1 and first[0, 0] == 0
    assert first[32, 30] == 1  # crowd under a non-crowd instance keeps the instance
    assert first[36, 30] == 255 and first[36, 5] == 255  # crowd elsewhere is ignored
    assert set(np.unique(second).tolist()) == {0}  # an image without annotations is background
