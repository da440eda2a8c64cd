"""DatUS² branch: segments, crops, pseudo-labels and masks on constructed inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from usseg.methods.datus2.crops import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_transform,
    crops_to_batch,
    segment_crops,
)
from usseg.methods.datus2.masks import dense_masks
from usseg.methods.datus2.params import CropParams, PseudolabelParams, SegmentParams
from usseg.methods.datus2.pseudolabels import fit_pseudolabels, kmeans_batch_size
from usseg.methods.datus2.segments import INVALID, key_graph, louvain, segment_image, split_components


def simplex_keys(groups: np.ndarray, dim: int = 8, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    """Keys whose group directions have negative dot products, so A > 0 exactly within groups."""
    rng = np.random.default_rng(seed)
    n = int(groups.max()) + 1
    directions = np.eye(n, dim) - np.eye(n, dim)[:n].mean(axis=0)  # centred simplex: cross dots < 0
    keys = directions[groups] + noise * rng.normal(size=(*groups.shape, dim))
    return keys.astype(np.float16)


def test_key_graph_thresholds_raw_dot_products() -> None:
    keys = np.array([[1.0, 0.0], [0.5, 0.1], [-1.0, 0.0]], dtype=np.float32)
    adj = key_graph(keys).toarray()
    assert adj.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert key_graph(keys, threshold=0.6).toarray()[0, 1] == 0


def test_louvain_recovers_planted_communities() -> None:
    groups = np.repeat(np.arange(4), 25)
    keys = simplex_keys(groups).reshape(-1, 8)
    adj = key_graph(keys).tolil()
    rng = np.random.default_rng(1)
    for i, j in rng.integers(0, 100, size=(20, 2)):  # a few cross-community edges
        adj[i, j] = adj[j, i] = 1
    labels = louvain(adj.tocsr(), seed=0)
    assert adjusted_rand_score(groups, labels) == 1.0
    assert (louvain(adj.tocsr(), seed=0) == labels).all()


def test_louvain_without_edges_gives_singletons() -> None:
    labels = louvain(key_graph(np.zeros((6, 4), np.float32)))
    assert sorted(labels.tolist()) == list(range(6))


def test_split_components_eight_connectivity_and_tau() -> None:
    c = np.zeros((8, 8), dtype=np.int32)
    c[0:2, 0:3] = 1  # 6 patches: valid (> 5)
    c[5:8, 5:8] = 1  # same community, disconnected: 9 patches, valid
    c[3, 3] = c[4, 4] = 2  # diagonal neighbours: one component of 2 (invalid)
    c[7, 0:5] = 3  # exactly 5 patches: invalid (tau = 5 needs more than 5)
    segments, count = split_components(c, tau=5)
    # components: community 0 (one piece), 1 (two pieces), 2 (one, diagonal), 3 (one)
    assert count == 5
    assert segments[0, 0] == segments[1, 2] != segments[6, 6]
    assert segments[0, 0] >= 0 and segments[6, 6] >= 0
    assert segments[3, 3] == segments[4, 4] == INVALID
    assert (segments[7, 0:5] == INVALID).all()
    assert sorted(np.unique(segments).tolist()) == [INVALID, 0, 1, 2]
    # community 0 (background, first in order) is segment 0, then community 1's pieces in raster order
    assert segments[4, 0] == 0 and segments[0, 0] == 1 and segments[6, 6] == 2


def test_segment_image_bands_become_segments() -> None:
    groups = np.repeat(np.arange(3), 4)[None].repeat(6, axis=0)  # 6x12 grid, three 6x4 bands
    result = segment_image(simplex_keys(groups), tau=5)
    assert result.num_segments == 3
    assert adjusted_rand_score(groups.ravel(), result.segments.ravel()) == 1.0
    assert result.communities.shape == (6, 12)


def test_segment_crops_mask_and_box() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, size=(8, 12, 3), dtype=np.uint8)  # 4x6 grid of 2px patches
    segments = np.full((4, 6), INVALID, dtype=np.int32)
    segments[1, 1:4] = 0
    segments[2, 3] = 0  # L shape: box rows 1..2, cols 1..3
    segments[3, 5] = 1
    crops = segment_crops(image, segments, patch_size=2)
    assert [c.shape for c in crops] == [(4, 6, 3), (2, 2, 3)]
    box = image[2:6, 2:8]
    assert (crops[0][:2] == box[:2]).all()  # the patch row of the segment is kept
    assert (crops[0][2:4, 0:4] == 0).all()  # outside the segment: zeroed
    assert (crops[0][2:4, 4:6] == box[2:4, 4:6]).all()
    assert (crops[1] == image[6:8, 10:12]).all()
    mean_fill = segment_crops(image, segments, patch_size=2, fill="mean")[0]
    assert (mean_fill[3, 0] == np.round(np.asarray(IMAGENET_MEAN) * 255)).all()
    with pytest.raises(ValueError, match="grid"):
        segment_crops(image[:6], segments, patch_size=2)


def test_crop_transform_is_resize_centercrop_normalise_in_rgb() -> None:
    crop = np.zeros((30, 60, 3), dtype=np.uint8)
    crop[..., 0] = 255  # pure red: RGB order must survive
    batch = crops_to_batch([crop, crop[:, :20]], crop_transform(256, 224))
    assert batch.shape == (2, 3, 224, 224)
    expected = (torch.tensor([1.0, 0.0, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(batch[0, :, 112, 112], expected, atol=1e-4)


def test_pseudolabels_separate_constructed_embeddings() -> None:
    rng = np.random.default_rng(0)
    truth = np.repeat(np.arange(4), 40)
    centres = rng.normal(size=(4, 32)) * 5
    x = centres[truth] + rng.normal(size=(160, 32))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = fit_pseudolabels(x, 4, epochs=10, seed=0)
    assert labels.dtype == np.int32 and labels.min() >= 0 and labels.max() < 4
    assert adjusted_rand_score(truth, labels) == 1.0
    two = truth < 2  # random init (the official code's) on two well separated clusters
    assert adjusted_rand_score(truth[two], fit_pseudolabels(x[two], 2, init="random", epochs=10)) == 1.0
    assert (fit_pseudolabels(x, 6, epochs=5, seed=3) == fit_pseudolabels(x, 6, epochs=5, seed=3)).all()
    with pytest.raises(ValueError, match="cannot form"):
        fit_pseudolabels(x[:3], 4)
    assert kmeans_batch_size(3000, 2048) == 4096 and kmeans_batch_size(6, 2048) == 2048


def test_dense_masks_assign_segment_labels_and_255() -> None:
    segments = np.full((2, 3, 3), INVALID, dtype=np.int32)
    segments[0, 0] = 0
    segments[0, 2] = 1
    segments[1, :, 1] = 0
    masks = dense_masks(segments, np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([4, 2, 7]))
    assert masks.dtype == np.uint8
    assert masks[0].tolist() == [[4, 4, 4], [255, 255, 255], [2, 2, 2]]
    assert masks[1, :, 1].tolist() == [7, 7, 7] and (masks[1, :, 0] == 255).all()
    with pytest.raises(ValueError, match="without a pseudo-label"):
        dense_masks(segments, np.array([0]), np.array([0]), np.array([1]))


def _band_store(path, n_images: int = 3):
    """A feature store whose images have three vertical key bands (the last image: all-zero keys)."""
    from types import SimpleNamespace

    from usseg.artifacts.features import create_store, write_batch

    groups = np.repeat(np.arange(3), 4)[None].repeat(6, axis=0)
    records = [SimpleNamespace(id=f"img{i}", height=60 + i, width=120) for i in range(n_images)]
    attrs = {"image_size": [84, 168], "patch_size": 14, "backbone": "test", "facet": "keys"}
    create_store(path, records, (6, 12), 8, 1, attrs)
    patch = np.stack([simplex_keys(groups, seed=i) for i in range(n_images)])
    patch[-1] = 0
    write_batch(path, 0, patch, np.zeros((n_images, 8)), np.zeros((n_images, 1, 6, 12)))
    return groups


SEGMENTS = SegmentParams(center=False, threshold=0.0, resolution=1.0, seed=0, tau=5)
PSEUDOLABELS = PseudolabelParams(k=3, pca=True, init="k-means++", epochs=5, kmeans_batch_size=2048, seed=0)
CROPS = CropParams(fill="zero", crop_resize=32, crop_size=28, batch_size=4, device="cpu")


def test_stages_segments_pseudolabels_masks_through_stores(tmp_path) -> None:
    from usseg.artifacts import segments as stores
    from usseg.artifacts.predictions import open_predictions
    from usseg.errors import UssegError
    from usseg.methods.datus2 import stages

    groups = _band_store(tmp_path / "features.zarr")
    stats = stages.run_segments(tmp_path / "features.zarr", tmp_path / "segments.zarr", SEGMENTS)
    assert (
        stats["images"] == 3 and stats["segments_per_image_max"] == 3 and stats["segments_per_image_min"] == 0
    )
    segments = stores.open_segments(tmp_path / "segments.zarr")
    assert segments["num_segments"].values.tolist() == [3, 3, 0]
    assert segments.attrs["grid"] == [6, 12] and segments["height"].values.tolist() == [60, 61, 62]

    # segment embeddings that identify the band, so pseudo-labels must follow the bands
    seg = segments["segments"].values
    ids, segs, band = [], [], []
    for i in range(2):
        for s in range(3):
            ids.append(f"img{i}")
            segs.append(s)
            band.append(int(groups[seg[i] == s][0]))
    emb = np.eye(3, 16)[band] + 0.01 * np.random.default_rng(0).normal(size=(6, 16))
    stores.write_segment_features(tmp_path / "sf.zarr", emb, ids, segs, {})
    stages.run_pseudolabels(tmp_path / "sf.zarr", tmp_path, tmp_path / "pl.zarr", PSEUDOLABELS)
    stages.run_masks(tmp_path / "segments.zarr", tmp_path / "pl.zarr", tmp_path / "scores.zarr")
    labels = open_predictions(tmp_path / "scores.zarr")["labels"].values
    assert (labels[2] == 255).all()
    for i in range(2):
        assert adjusted_rand_score(groups.ravel(), labels[i].ravel()) == 1.0
    assert adjusted_rand_score(labels[0].ravel(), labels[1].ravel()) == 1.0  # same band, same cluster

    with pytest.raises(UssegError, match="only 6 valid segments"):
        stages.run_pseudolabels(tmp_path / "sf.zarr", tmp_path, tmp_path / "pl2.zarr", dataclasses.replace(PSEUDOLABELS, k=7))
    stores.write_segments(tmp_path / "empty.zarr", ["a"], [5], [5], np.full((1, 6, 12), -1), np.zeros((1, 6, 12)),
                          {"tau": 5, "center": False})  # fmt: skip
    with pytest.raises(UssegError, match="tau=5"):
        stages.run_segment_features(tmp_path / "empty.zarr", tmp_path, "val", "dinov2_vits14", tmp_path / "w",
                                    tmp_path / "out.zarr", CROPS)  # fmt: skip


def test_benchmark_table_and_plot(tmp_path, monkeypatch) -> None:
    """A K sweep across the class count (8): both matchings in their own columns and their own lines,
    whatever the experiments' headline matching."""
    import json

    import pandas as pd

    from usseg.errors import UssegError
    from usseg.methods.datus2.benchmark import plot, write_benchmark

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")

    def scores(miou: float) -> dict:
        return {"mIoU": miou, "pixel_accuracy": 0.5, "mean_f1": 0.3,
                "valid_pixels": {"mIoU": miou + 0.05, "pixel_accuracy": 0.55, "mean_f1": 0.35}}  # fmt: skip

    files = []
    # K=6 (< 8 classes) headline Hungarian, K=10 (> 8) headline majority: the old plot joined them in one line.
    for name, k, matching, hung, maj in (("a", 6, "hungarian", 0.2, 0.3), ("b", 10, "majority", 0.15, 0.4)):
        proto = {"num_classes": 8, "unlabelled_fraction": 0.1, "hungarian": scores(hung), "majority": scores(maj)}
        metrics = {"experiment": name, "method": "datus2", "dataset": "suim", "backbone": "dino_vitb8",
                   "matching": matching, "crf": "none", "split": "test", "num_images": 3, "num_labels": k,
                   "protocols": {"default": proto, "suim6": {**proto, "num_classes": 6}}}  # fmt: skip
        folder = tmp_path / "datus2" / name / "eval"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(metrics))
        files.append(folder)
    out = tmp_path / "bench"
    rows = write_benchmark(files, out.with_suffix(".md"), out.with_suffix(".csv"), out.with_suffix(".png"))
    table = pd.read_csv(out.with_suffix(".csv"))
    default = table[table["protocol"] == "default"].set_index("k")
    assert "mIoU" not in table.columns and "matching" not in table.columns
    assert default["hungarian_mIoU"].to_dict() == {6: 20.0, 10: 15.0}
    assert default["majority_mIoU"].to_dict() == {6: 30.0, 10: 40.0}
    assert default.loc[6, "hungarian_mIoU_valid"] == 25.0 and default.loc[6, "weights"] == "unknown"
    assert "| a | suim | dino_vitb8 |" in out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").stat().st_size > 1000
    series = plot(rows, tmp_path / "p.png")
    assert series[("suim", "default", "dino_vitb8", "none", "hungarian")] == [(6, 20.0), (10, 15.0)]
    assert series[("suim", "default", "dino_vitb8", "none", "majority")] == [(6, 30.0), (10, 40.0)]
    assert len(series) == 4  # 2 protocols x 2 matchings
    (files[0] / "metrics.json").write_text(json.dumps({**metrics, "method": "kmeans"}))
    with pytest.raises(UssegError, match="not datus2"):
        write_benchmark(files, out.with_suffix(".md"), out.with_suffix(".csv"), out.with_suffix(".png"))


@pytest.mark.e2e
def test_datus2_branch_end_to_end(km_d2_workflow) -> None:
    """Snakemake runs segments -> crops/CLS -> pseudo-labels -> masks -> refine -> evaluate -> benchmark."""
    import json

    import mlflow
    import xarray as xr

    wf = km_d2_workflow  # conftest.KM_D2: d2 and d2-k3 (K = 3), beside a kmeans experiment

    # A K sweep shares Louvain and the segment CLS forward: only the pseudo-labels differ.
    shared = wf / "results/datus2/shared/demo/dinov2_vits14"
    steps = sorted(p.name.split("-")[0] for p in shared.glob("*.zarr"))
    assert steps == ["pseudolabels", "pseudolabels", "segment_features", "segments"]
    (segments_path,) = shared.glob("segments-*.zarr")
    (features_path,) = shared.glob("segment_features-*.zarr")
    segments = xr.open_zarr(segments_path, consolidated=False)
    assert segments["segments"].shape == (6, 8, 8) and int(segments["num_segments"].sum()) >= 5
    feats = xr.open_zarr(features_path, consolidated=False)
    assert feats.sizes["segment"] == int(segments["num_segments"].sum())
    assert np.allclose(np.linalg.norm(feats["cls"].values, axis=1), 1, atol=1e-4)
    scores = xr.open_zarr(wf / "results/datus2/d2/patch_scores.zarr", consolidated=False)
    invalid = segments["segments"].values < 0
    assert ((scores["labels"].values == 255) == invalid).all() and scores.attrs["num_labels"] == 5

    metrics = json.loads((wf / "results/datus2/d2/eval/metrics.json").read_text())
    for matching in ("hungarian", "majority"):
        scores = metrics["protocols"]["default"][matching]
        assert scores["mIoU"] <= scores["valid_pixels"]["mIoU"] + 1e-9 and len(scores["per_class_accuracy"]) == 5
    assert len(list((wf / "results/datus2/d2/pictures").glob("*.png"))) == 1

    mlflow.set_tracking_uri(f"sqlite:///{wf / 'results/mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    jobs = {r.data.tags.get("usseg.job"): r for r in runs if r.data.tags.get("usseg.experiment") != "km"}
    assert {"datus2_segments", "datus2_segment_features", "datus2_pseudolabels", "datus2_masks"} <= set(jobs)
    assert jobs["datus2_segments"].data.metrics["segments_per_image"] > 0
    table = (wf / "results/datus2/benchmark.csv").read_text()
    assert (
        jobs["evaluate"].info.run_id in table and "local:" in table
    )  # random weights never pass as a release
    assert (wf / "results/datus2/benchmark.png").stat().st_size > 1000
