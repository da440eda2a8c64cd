"""Prepared form: demo determinism, folder adapter, bad images converted or named."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import jobs_planned, make_workdir, run_workflow, tiny_params
from usseg.artifacts.prepared import PreparedDataset, read_rgb
from usseg.datasets import demo, folder
from usseg.errors import UssegError
from usseg.job_args import build_typed


def _folder_params(params: dict) -> folder.FolderParams:
    """A folder dataset's typed parameters (split val unless given), as `usseg prepare` builds them."""
    return build_typed(folder.PARAMS, {"split": "val", **params})


DEMO = {"adapter": "demo", "split": "val", "seed": 3, "min_side": 40, "max_side": 60, "splits": {"val": 3}}


def test_demo_is_deterministic_and_labelled(tmp_path):
    demo.prepare(None, tmp_path / "a", build_typed(demo.PARAMS, DEMO))
    demo.prepare(None, tmp_path / "b", build_typed(demo.PARAMS, DEMO))
    a, b = PreparedDataset(tmp_path / "a"), PreparedDataset(tmp_path / "b")
    assert [r.id for r in a.records("val")] == [r.id for r in b.records("val")]
    for ra, rb in zip(a.records("val"), b.records("val")):
        assert np.array_equal(a.load_image(ra), b.load_image(rb))
        label = a.load_label(ra)
        assert np.array_equal(label, b.load_label(rb))
        assert set(np.unique(label)) <= {0, 1, 2, 3, 4, 255}
        assert (label > 0).any() and (label == 0).any()
    assert not (tmp_path / "a.partial").exists()


def _save(path, array, mode=None):
    Image.fromarray(array, mode=mode).save(path)


def test_folder_converts_odd_modes(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    rng = np.random.default_rng(0)
    _save(images / "grey.png", rng.integers(0, 255, (20, 30), dtype=np.uint8))
    _save(images / "rgba.png", rng.integers(0, 255, (20, 30, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert("CMYK").save(images / "cmyk.jpg")
    Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)).save(images / "deep.png")
    folder.prepare(None, tmp_path / "out", _folder_params({"images": str(images), "split": "val"}))
    ds = PreparedDataset(tmp_path / "out")
    for record in ds.records("val"):
        image = ds.load_image(record)
        assert image.shape == (20, 30, 3) and image.dtype == np.uint8


def test_corrupt_image_is_named(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UssegError, match="broken"):
        read_rgb(bad)


def test_mask_size_mismatch_is_named(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    _save(tmp_path / "img" / "cat.png", np.zeros((10, 12, 3), np.uint8))
    _save(tmp_path / "mask" / "cat.png", np.zeros((11, 12), np.uint8))
    params = {"images": str(tmp_path / "img"), "masks": str(tmp_path / "mask"), "classes": ["bg", "cat"]}
    with pytest.raises(UssegError, match="'cat'.*mask is 12x11"):
        folder.prepare(None, tmp_path / "out", _folder_params(params))
    assert not (tmp_path / "out").exists()


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(UssegError, match="no images"):
        folder.prepare(None, tmp_path / "out", _folder_params({"images": str(tmp_path / "img")}))


def test_mask_class_out_of_range(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    _save(tmp_path / "img" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "mask" / "a.png", np.full((4, 4), 7, np.uint8))
    with pytest.raises(UssegError, match=r"class ids \[7\]"):
        params = {"images": str(tmp_path / "img"), "masks": str(tmp_path / "mask"), "classes": ["bg", "x"]}
        folder.prepare(None, tmp_path / "o", _folder_params(params))


def _png16(path, rows, colour):
    """A 16-bit PNG (grey or RGB) written byte by byte: Pillow cannot save 16-bit RGB."""
    import struct
    import zlib

    arr = np.asarray(rows, dtype=">u2")
    height, width = arr.shape[:2]

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2 if colour else 0, 0, 0, 0)
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                     + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([[0, 100, 200, 255]], [[0, 0, 0, 0]]),  # dark 16-bit image: not stretched as if 8-bit
        ([[0, 2570, 12850, 25700]], [[0, 10, 50, 100]]),  # max well below 65535: not stretched
        ([[256, 511, 65535, 32768]], [[1, 1, 255, 128]]),
    ],
)
def test_16bit_grey_scaled_by_bit_depth(tmp_path, values, expected):
    path = _png16(tmp_path / "deep.png", values, colour=False)
    with Image.open(path) as im:
        assert im.mode == "I;16"
    rgb = read_rgb(path)
    assert rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == expected
    assert np.array_equal(rgb[..., 0], rgb[..., 2])


def test_16bit_rgb_scaled_by_bit_depth(tmp_path):
    values = [[[0, 200, 12850], [25700, 65535, 2570]]]
    path = _png16(tmp_path / "deep_rgb.png", values, colour=True)
    assert read_rgb(path).tolist() == [[[0, 0, 50], [100, 255, 10]]]


def _folder(tmp_path, names, masks=True):
    images = tmp_path / "img"
    images.mkdir()
    for name in names:
        _save(images / name, np.full((6, 8, 3), 90, np.uint8))
    params = {"images": str(images), "split": "val", "classes": ["bg", "fg"]}
    if masks:
        (tmp_path / "mask").mkdir()
        for name in names:
            _save(tmp_path / "mask" / f"{name.rsplit('.', 1)[0]}.png", np.zeros((6, 8), np.uint8))
        params["masks"] = str(tmp_path / "mask")
    return params


def test_folder_same_stem_refused_naming_both(tmp_path):
    params = _folder(tmp_path, ["a.jpg", "a.png", "b.png"])
    with pytest.raises(UssegError) as err:
        folder.prepare(None, tmp_path / "out", _folder_params(params))
    img = tmp_path / "img"
    assert f"{img / 'a.jpg'} and {img / 'a.png'} share the image id 'a'" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_folder_masks_in_the_image_folder_refused(tmp_path):
    images = tmp_path / "img"
    images.mkdir()
    _save(images / "a.png", np.zeros((6, 8), np.uint8))  # a grey image would pass as its own mask
    (tmp_path / "masks").symlink_to(images)
    params = {"images": str(images), "masks": str(tmp_path / "masks"), "classes": ["bg", "fg"]}
    with pytest.raises(UssegError, match="mask folder .* is the image folder") as err:
        folder.prepare(None, tmp_path / "out", _folder_params(params))
    assert str(images) in str(err.value) and params["masks"] in str(err.value)
    assert not (tmp_path / "out").exists()


def test_folder_input_files_are_what_prepare_reads(tmp_path):
    params = _folder(tmp_path, ["b.png", "a.jpg", "c.png"])
    img, mask = tmp_path / "img", tmp_path / "mask"
    assert folder.input_files(_folder_params(params)) == [
        img / "a.jpg", img / "b.png", img / "c.png", mask / "a.png", mask / "b.png", mask / "c.png"
    ]
    (tmp_path / "ids.txt").write_text("c\na\n")
    params["ids"] = str(tmp_path / "ids.txt")
    assert folder.input_files(_folder_params(params)) == [
        img / "a.jpg", img / "c.png", mask / "a.png", mask / "c.png", tmp_path / "ids.txt"
    ]
    # What prepare refuses is still listed (no error), so adding or removing it re-prepares.
    (mask / "a.png").unlink()
    _save(img / "c.jpg", np.zeros((6, 8, 3), np.uint8))
    assert folder.input_files(_folder_params(params)) == [
        img / "a.jpg", img / "c.jpg", img / "c.png", mask / "c.png", tmp_path / "ids.txt"
    ]


OWN = {"adapter": "folder", "split": "val", "images": "own/images", "masks": "own/masks",
       "classes": ["bg", "fg"]}
AFTER_PREPARE = ["all", "evaluate", "features", "grid", "kmeans", "prepare", "refine", "summary"]


def _own_image(wf, name, seed):
    """A random image (PNG or JPEG by its name) in the workflow's folder dataset, and its mask."""
    rng = np.random.default_rng(seed)
    (wf / "own" / "images").mkdir(parents=True, exist_ok=True)
    (wf / "own" / "masks").mkdir(parents=True, exist_ok=True)
    _save(wf / "own" / "images" / name, rng.integers(0, 255, (40, 52, 3), dtype=np.uint8))
    mask = rng.integers(0, 2, (40, 52), dtype=np.uint8)
    _save(wf / "own" / "masks" / f"{name.rsplit('.', 1)[0]}.png", mask)


@pytest.fixture(scope="module")
def folder_workflow(tmp_path_factory, random_vits14):
    """A kmeans experiment on a `folder` dataset of three generated images, run once."""
    exp = [{"name": "km-own", "method": "kmeans", "dataset": "own", "backbone": "dinov2_vits14"}]
    params = tiny_params(Path("ckpt.safetensors"), exp)  # a local checkpoint, in the workflow folder
    params["data"]["datasets"] = {"own": OWN}
    root = tmp_path_factory.mktemp("folder")
    (root / "wf").mkdir()
    shutil.copy(random_vits14, root / "wf" / "ckpt.safetensors")
    wf = make_workdir(root, params)
    for seed, name in enumerate(["a.png", "b.png", "c.jpg"]):
        _own_image(wf, name, seed)
    run_workflow(wf)
    assert jobs_planned(wf) == []
    return wf


@pytest.mark.e2e
@pytest.mark.parametrize(
    "edit",
    [
        lambda wf: _own_image(wf, "a.png", 10),  # an image changed
        lambda wf: _save(wf / "own/masks/b.png", np.ones((40, 52), np.uint8)),  # a mask changed
        lambda wf: _own_image(wf, "d.jpg", 11),  # an image added
        lambda wf: [(wf / f).unlink() for f in ("own/images/c.jpg", "own/masks/c.png")],  # removed
    ],
    ids=["change-image", "change-mask", "add", "remove"],
)
def test_folder_edits_re_prepare_and_rerun_downstream(folder_workflow, tmp_path, edit):
    wf = tmp_path / "wf"
    shutil.copytree(folder_workflow, wf, symlinks=True)  # keeps mtimes and Snakemake's records
    assert jobs_planned(wf) == []
    edit(wf)
    assert sorted(jobs_planned(wf)) == AFTER_PREPARE


@pytest.mark.e2e
def test_a_checkpoint_replaced_in_place_re_converts_and_reruns_downstream(folder_workflow, tmp_path):
    """`backbones.<name>.weights` was no rule input: a new state dict copied over it went
    unnoticed and the old converted weights kept being used (#18.3)."""
    from safetensors.torch import load_file, save_file

    wf = tmp_path / "wf"
    shutil.copytree(folder_workflow, wf, symlinks=True)
    state = load_file(wf / "ckpt.safetensors")
    state["cls_token"] = state["cls_token"] + 1.0  # another valid state dict, same file name
    save_file(state, str(wf / "ckpt.safetensors"))
    assert sorted(jobs_planned(wf)) == sorted({*AFTER_PREPARE, "weights"} - {"prepare"})


@pytest.mark.e2e
def test_folder_same_stem_added_stops_prepare_naming_both(folder_workflow, tmp_path):
    wf = tmp_path / "wf"
    shutil.copytree(folder_workflow, wf, symlinks=True)
    _save(wf / "own/images/a.jpg", np.zeros((40, 52, 3), np.uint8))
    assert sorted(jobs_planned(wf)) == AFTER_PREPARE
    proc = run_workflow(wf, check=False)
    assert proc.returncode != 0
    assert "own/images/a.jpg and own/images/a.png share the image id 'a'" in proc.stdout + proc.stderr


def test_resumed_prepare_re_prepares_a_changed_source(tmp_path):
    """A partial folder keeps only the images whose source bytes are unchanged (#18.2).

    Three images, the third truncated: prepare fails with the first two written. The user
    fixes the third and replaces the first (image and mask): the resumed prepare must write
    the new first image and label, not keep the stale ones.
    """
    img, msk = tmp_path / "img", tmp_path / "mask"
    img.mkdir()
    msk.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        _save(img / f"{name}.png", rng.integers(0, 255, (16, 20, 3), dtype=np.uint8))
        _save(msk / f"{name}.png", np.zeros((16, 20), np.uint8))
    good_c = (img / "c.png").read_bytes()
    (img / "c.png").write_bytes(good_c[: len(good_c) // 2])
    params = {"images": str(img), "masks": str(msk), "classes": ["bg", "fg"], "split": "val"}
    with pytest.raises(UssegError, match="'c'"):
        folder.prepare(None, tmp_path / "out", _folder_params(params))
    assert sorted(p.name for p in (tmp_path / "out.partial" / "images").iterdir()) == ["a.png", "b.png"]
    (img / "c.png").write_bytes(good_c)
    new_a = rng.integers(0, 255, (16, 20, 3), dtype=np.uint8)
    _save(img / "a.png", new_a)
    _save(msk / "a.png", np.ones((16, 20), np.uint8))
    folder.prepare(None, tmp_path / "out", _folder_params(params))
    ds = PreparedDataset(tmp_path / "out")
    first = ds.records("val")[0]
    assert first.id == "a"
    assert np.array_equal(ds.load_image(first), new_a)
    assert (ds.load_label(first) == 1).all()
    # the same as preparing the current sources afresh, byte for byte
    folder.prepare(None, tmp_path / "fresh", _folder_params(params))
    def files(root):
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    assert files(tmp_path / "out") == files(tmp_path / "fresh")


def test_split_index_changes_with_image_content(tmp_path):
    """The split index records each image's digest, so a consumer's fingerprint of it
    (features, refine, datus2, context_aware) changes when an image's bytes change (#18.2)."""
    img = tmp_path / "img"
    img.mkdir()
    _save(img / "a.png", np.zeros((8, 8, 3), np.uint8))
    folder.prepare(None, tmp_path / "one", _folder_params({"images": str(img), "split": "val"}))
    _save(img / "a.png", np.full((8, 8, 3), 9, np.uint8))
    folder.prepare(None, tmp_path / "two", _folder_params({"images": str(img), "split": "val"}))
    one, two = ((tmp_path / d / "val.csv").read_text() for d in ("one", "two"))
    assert one != two
    assert one.splitlines()[0] == "id,image,label,height,width,sha256"
