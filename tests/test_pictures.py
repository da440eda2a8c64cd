"""Overlays and grids colour each cluster by its matched class, with a legend naming the colours."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from usseg.artifacts.prepared import PreparedDataset, PreparedWriter, Sample
from usseg.errors import UssegError
from usseg.evaluation.grid import grid_figure, read_row
from usseg.evaluation.pictures import (
    IGNORE_NAME,
    UNMATCHED_NAME,
    UNMATCHED_STRIPES,
    overlay_colours,
    overlay_figure,
)

CLASSES = ["background", "cat", "dog"]
PALETTE = np.array([[0, 0, 0], [200, 0, 0], [0, 0, 200]], np.uint8)
# cluster 0 -> dog, 1 -> background, 2 -> cat, 3 unmatched (-1)
MAPPING = [2, 0, 1, -1]


def test_overlay_colours_prediction_like_its_matched_class():
    pred = np.array([[0, 1, 2, 3], [0, 0, 255, 3]], np.uint8)
    gt = np.array([[2, 0, 1, 1], [2, 255, 0, 0]], np.uint8)
    overlay = overlay_colours(pred, gt, MAPPING, PALETTE, CLASSES)
    for cluster in range(3):
        y, x = np.argwhere(pred == cluster)[0]
        gy, gx = np.argwhere(gt == MAPPING[cluster])[0]
        colour = PALETTE[MAPPING[cluster]].tolist()
        assert overlay.prediction[y, x].tolist() == overlay.ground_truth[gy, gx].tolist() == colour
    # the unmatched cluster: grey stripes, a colour of no class
    assert {tuple(c) for c in overlay.prediction[pred == 3].tolist()} <= set(UNMATCHED_STRIPES)
    assert overlay.legend == [("background", (0, 0, 0)), ("cat", (200, 0, 0)), ("dog", (0, 0, 200)),
                              (UNMATCHED_NAME, UNMATCHED_STRIPES[0]), (IGNORE_NAME, (255, 255, 255))]


def test_overlay_legend_lists_only_what_is_shown(tmp_path):
    pred = np.zeros((8, 8), np.uint8)  # cluster 0 -> dog
    gt = np.full((8, 8), 2, np.uint8)
    overlay = overlay_colours(pred, gt, MAPPING, PALETTE, CLASSES)
    assert overlay.legend == [("dog", (0, 0, 200))]
    image = np.full((8, 8, 3), 90, np.uint8)
    overlay_figure(image, overlay, tmp_path / "o.png", "img")
    assert Image.open(tmp_path / "o.png").format == "PNG"


def _dataset(root: Path, n: int) -> PreparedDataset:
    """n tiny images with labels (classes as above)."""
    rng = np.random.default_rng(0)
    samples = [Sample(f"im{i}", rng.integers(0, 255, (10, 12, 3), np.uint8),
                      rng.integers(0, 3, (10, 12), np.uint8)) for i in range(n)]
    PreparedWriter(root, "toy", CLASSES, True, palette=PALETTE.tolist()).write([("val", samples)])
    return PreparedDataset(root)


def _experiment(root: Path, name: str, n: int) -> tuple[Path, Path]:
    """An experiment's eval report (metrics.json) and label maps of n images."""
    labels, report = root / name / "refined", root / name / "eval"
    labels.mkdir(parents=True)
    report.mkdir()
    for i in range(n):
        Image.fromarray(np.full((10, 12), i % 4, np.uint8)).save(labels / f"im{i}.png")
    metrics = {"experiment": name, "method": "kmeans", "backbone": "vit", "crf": "off",
               "matching": "hungarian", "split": "val", "mIoU": 0.25,
               "protocols": {"default": {"hungarian": {"cluster_to_class": MAPPING}}}}
    (report / "metrics.json").write_text(json.dumps(metrics))
    return report, labels


def test_grid_rows_are_experiments_columns_are_the_same_images(tmp_path):
    dataset = _dataset(tmp_path / "ds", 5)
    rows = [read_row(*_experiment(tmp_path, name, 5)) for name in ("a", "b")]
    out = tmp_path / "grids" / "toy.png"
    grid = grid_figure(dataset, rows, 4, out)  # im3 is cluster 3: unmatched
    assert grid.columns == ["im0", "im1", "im2", "im3"]
    assert [r.split("\n")[0] for r in grid.rows] == ["image", "ground truth", "a", "b"]
    assert [name for name, _ in grid.legend] == ["background", "cat", "dog", UNMATCHED_NAME]
    assert Image.open(out).format == "PNG"


def test_grid_names_an_unfinished_report(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(UssegError, match="eval: no metrics.json"):
        read_row(tmp_path / "eval", tmp_path / "refined")
