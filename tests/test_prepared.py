"""Prepared form: demo determinism, folder adapter, bad images converted or named."""

import numpy as np
import pytest
from PIL import Image

from usseg.datasets import demo, folder
from usseg.datasets.prepared import PreparedDataset, read_rgb
from usseg.errors import UssegError

DEMO = {"adapter": "demo", "split": "val", "seed": 3, "min_side": 40, "max_side": 60, "splits": {"val": 3}}


def test_demo_is_deterministic_and_labelled(tmp_path):
    demo.prepare(None, tmp_path / "a", DEMO)
    demo.prepare(None, tmp_path / "b", DEMO)
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
    folder.prepare(None, tmp_path / "out", {"images": str(images), "split": "val"})
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
        folder.prepare(None, tmp_path / "out", params)
    assert not (tmp_path / "out").exists()


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "img").mkdir()
    with pytest.raises(UssegError, match="no images"):
        folder.prepare(None, tmp_path / "out", {"images": str(tmp_path / "img")})


def test_mask_class_out_of_range(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "mask").mkdir()
    _save(tmp_path / "img" / "a.png", np.zeros((4, 4, 3), np.uint8))
    _save(tmp_path / "mask" / "a.png", np.full((4, 4), 7, np.uint8))
    with pytest.raises(UssegError, match=r"class ids \[7\]"):
        folder.prepare(None, tmp_path / "o", {"images": str(tmp_path / "img"), "masks": str(tmp_path / "mask"),
                                              "classes": ["bg", "x"]})
