"""Feature store: round trip, one-image reads, resume after interruption, rebuild on change."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from usseg.artifacts import features as store
from usseg.artifacts.atomic import partial_path
from usseg.datasets import demo
from usseg.errors import UssegError
from usseg.features import extract
from usseg.features.params import FeatureParams

PARAMS = {"image_size": 56, "facet": "keys", "batch_size": 2, "device": "cpu", "split": "val"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("ds") / "demo"
    params = demo.DemoParams(split="val", seed=1, min_side=40, max_side=70, splits={"val": 5})
    demo.prepare(None, root, params)
    return root


def build(dataset, weights, out, **overrides):
    return extract.extract_features(
        dataset, "dinov2_vits14", weights, out, FeatureParams(**{**PARAMS, **overrides})
    )


def test_round_trip_and_layout(dataset, random_vits14, tmp_path):
    out = build(dataset, random_vits14, tmp_path / "f.zarr")
    ds = store.open_features(out)
    assert ds["patch"].shape == (5, 4, 4, 384) and ds["patch"].dtype == np.float16
    assert ds["cls"].shape == (5, 384) and ds["attn"].shape == (5, 6, 4, 4)
    assert ds.attrs["grid"] == [4, 4] and ds.attrs["backbone"] == "dinov2_vits14"
    assert list(ds["image"].values) == [f"demo_val_{i:04d}" for i in range(5)]
    # One chunk per image: reading image 3 touches only its own chunk files.
    assert ds["patch"].encoding["chunks"] == (1, 4, 4, 384)
    one = ds["patch"].isel(image=3).values
    assert np.isfinite(one).all() and one.std() > 0
    attn = ds["attn"].values.astype(np.float32).sum(axis=(2, 3))
    assert (attn <= 1.0 + 1e-2).all() and (attn > 0).all()
    assert not partial_path(out).exists()


def test_interrupted_run_resumes_to_identical_store(dataset, random_vits14, tmp_path, monkeypatch):
    reference = xr.open_zarr(build(dataset, random_vits14, tmp_path / "ref.zarr"), consolidated=False)
    calls = {"n": 0}
    real_write = store.write_batch

    def crash_after_first(*args, **kwargs):
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated interruption")
        calls["n"] += 1
        real_write(*args, **kwargs)

    out = tmp_path / "f.zarr"
    monkeypatch.setattr(store, "write_batch", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        build(dataset, random_vits14, out)
    assert not out.exists() and store.first_missing(partial_path(out)) == 2
    monkeypatch.setattr(store, "write_batch", real_write)
    resumed = xr.open_zarr(build(dataset, random_vits14, out), consolidated=False)
    for name in ("patch", "cls", "attn"):
        np.testing.assert_array_equal(resumed[name].values, reference[name].values)
    assert resumed.attrs["digest"] == reference.attrs["digest"]


def test_other_parameters_rebuild(dataset, random_vits14, tmp_path):
    out = tmp_path / "f.zarr"
    keys = store.open_features(build(dataset, random_vits14, out))["patch"].values
    values = store.open_features(build(dataset, random_vits14, out, facet="value"))
    assert values.attrs["facet"] == "value"
    assert not np.array_equal(values["patch"].values, keys)


def test_bad_sizes_are_named(dataset, random_vits14, tmp_path):
    with pytest.raises(UssegError, match="multiple of"):
        build(dataset, random_vits14, tmp_path / "f.zarr", image_size=50)
    tiny = tmp_path / "tiny"
    demo.prepare(None, tiny, demo.DemoParams(split="val", seed=0, min_side=8, max_side=10, splits={"val": 1}))
    with pytest.raises(UssegError, match="demo_val_0000.*smaller than one 14x14 patch"):
        build(tiny, random_vits14, tmp_path / "g.zarr")


def test_decoding_runs_a_bounded_number_of_batches_ahead(dataset, monkeypatch):
    """Memory of the decode queue is a few batches, not the split (the pool once got every image)."""
    import threading
    import time

    from usseg.artifacts.prepared import PreparedDataset, Record

    decoded: list[str] = []
    lock = threading.Lock()

    def fake_load(_dataset, record, size, _patch):
        with lock:
            decoded.append(record.id)
        return np.zeros((size, size, 3), np.uint8)

    monkeypatch.setattr(extract, "load_resized", fake_load)
    records = [Record(f"img{i}", None, None, 20, 20) for i in range(40)]
    gen = extract.batches(PreparedDataset(dataset), records, 14, 14, batch_size=2)
    first = next(gen)
    time.sleep(0.5)  # let the pool finish whatever it was given
    assert first.shape == (2, 14, 14, 3)
    assert len(decoded) == 8  # 3 batches ahead at the start, one more batch refilled after the first
    assert sum(len(b) for b in gen) == 38 and len(decoded) == 40


def test_a_full_disk_names_the_store_and_the_space_it_needs(dataset, random_vits14, tmp_path, monkeypatch):
    """A 40-line zarr/asyncio traceback before (#18.7)."""
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "write_batch", full)
    with pytest.raises(UssegError) as err:
        build(dataset, random_vits14, tmp_path / "f.zarr")
    # 5 images x (4x4 patches x (384 channels + 6 heads) + 384 CLS) x 2 bytes = 66,240 bytes
    assert str(err.value).startswith(f"no space left on the device writing {tmp_path / 'f.zarr.partial'}: ")
    assert "free there; it needs up to 0.1 MB. Free some space" in str(err.value)
