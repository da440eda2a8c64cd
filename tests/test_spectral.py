"""Spectral branch (Deep Spectral Methods): affinities, eigenvectors, segments, clusters, labels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from conftest import run_workflow, tiny_params
from usseg.artifacts import segments as S
from usseg.artifacts.predictions import open_predictions
from usseg.errors import UssegError
from usseg.methods.spectral.eigen import (
    border_background,
    foreground_segments,
    knn_colour_affinity,
    laplacian_eigenvectors,
    multi_region,
)
from usseg.methods.spectral.stages import run_masks


def test_knn_affinity_of_a_tiny_image_links_every_pair_four_times() -> None:
    # 4 pixels: both neighbour lists (k = 20, 10, capped at 4) hold every pixel, in both directions
    w = knn_colour_affinity(np.random.default_rng(0).random((2, 2, 3))).toarray()
    assert (w == 4).all()


def test_knn_affinity_is_symmetric_and_counts_each_pixel_k_times_at_least() -> None:
    w = knn_colour_affinity(np.random.default_rng(1).random((8, 8, 3)))
    assert (w != w.T).nnz == 0
    assert (w.diagonal() >= 2 * 2).all()  # itself, in both lists, both directions
    assert w.sum() == 2 * (20 + 10) * 64


def object_keys(grid: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """Orthogonal keys for a 2 x 2 object in the middle of a ``grid`` x ``grid`` background."""
    mask = np.zeros((grid, grid), bool)
    mask[2:4, 2:4] = True
    keys = np.where(mask.reshape(-1, 1), [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    return keys, mask


def test_two_disconnected_groups_give_two_zero_eigenvalues_and_a_splitting_vector() -> None:
    keys, mask = object_keys()
    values, vectors = laplacian_eigenvectors(keys, None, 3, colour_lambda=0.0)
    assert values[:2] == pytest.approx([0.0, 0.0], abs=1e-9) and values[2] > 0.5
    second = vectors[1]
    assert np.ptp(second[mask.reshape(-1)]) < 1e-9 and np.ptp(second[~mask.reshape(-1)]) < 1e-9
    assert abs(second[mask.reshape(-1)][0] - second[~mask.reshape(-1)][0]) > 1e-3
    # the sign fix: positive on at most half of the patches
    assert (second > 1e-9).sum() <= len(second) // 2


def test_multi_region_finds_the_object_and_puts_the_background_at_zero() -> None:
    keys, mask = object_keys()
    regions = multi_region(
        keys, None, mask.shape, num_eigenvectors=2, num_segments=2, colour_lambda=0.0, seed=0
    )
    assert (regions.regions == mask.astype(np.int32)).all()
    assert (foreground_segments(regions.regions) == np.where(mask, 0, -1)).all()


def test_colour_affinity_separates_an_object_the_keys_do_not() -> None:
    # every key equal (no feature signal); a red 6 x 6 object (more pixels than the 20 colour
    # neighbours) on a blue background, colour weight 10: the Fiedler vector splits by colour
    mask = np.zeros((10, 10), bool)
    mask[2:8, 2:8] = True
    keys = np.ones((100, 3))
    image = np.where(mask[..., None], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])
    regions = multi_region(
        keys, image, mask.shape, num_eigenvectors=2, num_segments=2, colour_lambda=10.0, seed=0
    )
    assert adjusted_rand_score(mask.reshape(-1), regions.regions.reshape(-1)) == 1.0
    assert regions.regions[0, 0] == 0


def test_border_background_counts_border_pixels() -> None:
    segmap = np.array([[3, 3, 3], [1, 2, 1], [1, 1, 1]])
    assert border_background(segmap) == 1  # 1: 6 border pixels (corners twice), 3: 4


def write_store(tmp: Path, maps: np.ndarray, labels: list[int]) -> tuple[Path, Path]:
    ids = [f"im{i}" for i in range(len(maps))]
    segments, clusters = tmp / "segments.zarr", tmp / "clusters.zarr"
    shape = np.full(len(maps), 28)
    S.write_segments(segments, ids, shape, shape, maps, maps, {"image_size": [28, 28], "patch_size": 14})
    owners = [(ids[i], s) for i in range(len(maps)) for s in range(int(maps[i].max()) + 1)]
    S.write_pseudolabels(clusters, np.asarray(labels), [o[0] for o in owners], np.asarray([o[1] for o in owners]),
                         {"k": 3})  # fmt: skip
    return segments, clusters


def test_masks_put_background_at_zero_and_shift_clusters_by_one(tmp_path: Path) -> None:
    maps = np.array([[[-1, 0], [1, 1]], [[0, -1], [-1, -1]]], np.int32)
    segments, clusters = write_store(tmp_path, maps, [2, 0, 0])
    stats = run_masks(segments, clusters, tmp_path / "patch_scores.zarr")
    labels = open_predictions(tmp_path / "patch_scores.zarr")
    assert labels.attrs["num_labels"] == 4 and stats["k"] == 3
    assert labels["labels"].values.tolist() == [[[0, 3], [1, 1]], [[1, 0], [0, 0]]]


def test_masks_refuse_clusters_that_miss_a_segment(tmp_path: Path) -> None:
    maps = np.array([[[0, 1], [1, 1]]], np.int32)
    segments, _ = write_store(tmp_path, maps, [0, 1])
    S.write_pseudolabels(tmp_path / "short.zarr", np.asarray([0]), ["im0"], np.asarray([0]), {"k": 2})
    with pytest.raises(UssegError, match="does not cover .*image 'im0' has 2 segments, 1 clustered"):
        run_masks(segments, tmp_path / "short.zarr", tmp_path / "out.zarr")


def test_spectral_branch_end_to_end(workdir, random_vits14: Path) -> None:
    """Every spectral rule through Snakemake on the tiny demo, with DatUS²'s crop step."""
    exps = [{"name": "sp", "method": "spectral", "dataset": "demo", "backbone": "dinov2_vits14",
             "overrides": {"spectral": {"num_segments": 4, "crop_resize": 56, "crop_size": 56}}}]  # fmt: skip
    wf = workdir(tiny_params(random_vits14, exps))
    run_workflow(wf)
    metrics = json.loads((wf / "results/spectral/sp/eval/metrics.json").read_text())
    classes = json.loads((wf / "data/prepared/demo/meta.json").read_text())["classes"]
    assert metrics["num_labels"] == len(classes)  # K = classes - 1 clusters + the background label
    shared = sorted(
        p.name.split("-")[0] for p in (wf / "results/spectral/shared/demo/dinov2_vits14").iterdir()
    )
    assert shared == ["clusters", "segment_features", "segments"]
    assert "sp" in (wf / "results/summary.md").read_text()
