"""`usseg summary`: both matchings side by side, setup columns, published numbers beside ours."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from usseg.errors import UssegError
from usseg.evaluation.published import load_published
from usseg.evaluation.report import score_protocol
from usseg.evaluation.summary import write_summary

# Cluster x class counts (last row: unlabelled) where the matchings differ: Hungarian leaves
# cluster 2 unmatched (mIoU mean(4/5, 3/5) = 70 %), majority maps it to class 1 (mIoU 49/60 = 81.67 %).
COUNTS = np.array([[4, 0], [0, 3], [1, 2], [0, 0]])


def _write(root, method, exp, dataset, backbone, setup):
    entry, _ = score_protocol(COUNTS, ["a", "b"])
    full = {
        "experiment": exp,
        "method": method,
        "dataset": dataset,
        "backbone": backbone,
        "setup": setup,
        "matching": "hungarian",
        "split": "val",
        "crf": "off",
        "num_labels": 3,
        "num_images": 2,
        "protocols": {"default": entry},
    }
    folder = root / method / exp / "eval"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(full))
    return folder


def test_summary_matchings_setup_and_published(tmp_path):
    folders = [
        _write(tmp_path, "kmeans", "km-coco", "cocostuff27", "dino_vitb8", {"image_size": 448}),
        _write(
            tmp_path,
            "context_aware",
            "ca-coco",
            "cocostuff27",
            "dino_vits8",
            {"image_size": 320, "train_split": "val", "init": "random"},
        ),
        _write(tmp_path, "kmeans", "km-demo", "demo", "dino_vitb8", {"image_size": 224}),
    ]
    write_summary(folders, tmp_path / "summary.md", tmp_path / "summary.csv")
    csv_text = (tmp_path / "summary.csv").read_text()
    table = pd.read_csv(io.StringIO(csv_text), dtype=str, keep_default_na=False).set_index("experiment")
    assert "mIoU" not in table.columns  # never one column holding either matching
    assert (
        table.loc["km-coco", "hungarian_mIoU"] == "70.0" and table.loc["km-coco", "majority_mIoU"] == "81.67"
    )
    assert table.loc["km-coco", "hungarian_pixel_accuracy"] == "70.0"
    assert table.loc["km-coco", "majority_pixel_accuracy"] == "90.0"
    # PriMaPs README baseline row: DINO ViT-B/8 + k-means, 15.7 mIoU / 38.8 pixel accuracy (Hungarian).
    assert table.loc["km-coco", "published_mIoU"] == "15.7" and table.loc["km-coco", "diff_mIoU"] == "54.3"
    assert table.loc["km-coco", "published_pixel_accuracy"] == "38.8"
    assert table.loc["km-coco", "diff_pixel_accuracy"] == "31.2"
    assert (
        table.loc["ca-coco", "published_mIoU"] == "unknown" and table.loc["ca-coco", "diff_mIoU"] == "unknown"
    )
    assert table.loc["km-demo", "published_mIoU"] == "none" and table.loc["km-demo", "published_ref"] == ""
    assert table.loc["km-demo", "image_size"] == "224" and table.loc["km-coco", "train_split"] == ""
    assert table.loc["ca-coco", "init"] == "random"
    assert list(table.index) == ["ca-coco", "km-coco", "km-demo"]  # dataset, then headline mIoU (ties: name)

    md = (tmp_path / "summary.md").read_text()
    assert "mean over the classes present in the split's ground truth" in md
    assert "Not benchmarks (voc2012, coco81, cocostuff27, suim) but demo or sample data: demo;" in md
    assert "## Anchors" in md and "### cocostuff27" in md and "| STEGO | anchor |" in md
    assert "### demo" not in md and "### voc2012" not in md
    assert "| cocostuff27 | km-coco | kmeans | dino_vitb8 | 448 |  |  | default |" in md


def test_summary_orders_by_headline_score(tmp_path):
    low = _write(tmp_path, "kmeans", "b-low", "demo", "x", {})
    high = _write(tmp_path, "kmeans", "a-high", "demo", "x", {})
    full = json.loads((high / "metrics.json").read_text())
    (high / "metrics.json").write_text(json.dumps({**full, "matching": "majority"}))
    write_summary([low, high], tmp_path / "s.md", tmp_path / "s.csv")
    table = pd.read_csv(tmp_path / "s.csv")
    assert table["experiment"].tolist() == ["a-high", "b-low"] and table["headline"].tolist() == [
        "majority",
        "hungarian",
    ]


def test_published_file_loads_and_is_checked(tmp_path):
    entries = load_published()
    baseline = [
        e for e in entries if (e.method, e.dataset, e.backbone) == ("kmeans", "cocostuff27", "dino_vitb8")
    ]
    assert [(e.mIoU, e.pixel_accuracy) for e in baseline] == [(15.7, 38.8)]
    assert {e.dataset for e in entries} == {"voc2012", "coco81", "cocostuff27", "suim"}
    bad = tmp_path / "published.yaml"
    row = (
        "{method: STEGO, kind: anchor, dataset: cocostuff27, protocol: default, split: val, backbone: x, "
        "matching: hungarian, mIoU: %s, pixel_accuracy: null, mean_f1: null, source: s, note: n}"
    )
    bad.write_text("entries:\n  - " + row % "28.2" + "\n  - " + row % "'about 15'" + "\n")
    with pytest.raises(UssegError, match=r"entry 1 \(STEGO\): mIoU must be a percentage"):
        load_published(bad)
    bad.write_text("entries:\n  - " + (row % "1").replace("cocostuff27", "coco") + "\n")
    with pytest.raises(UssegError, match=r"entry 0 \(STEGO\): dataset 'coco' is not one of"):
        load_published(bad)


def test_summary_rejects_an_old_metrics_file_naming_it(tmp_path):
    folder = tmp_path / "kmeans" / "old" / "eval"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"matching": "hungarian", "protocols": {"default": {"mIoU": 0.5}}}))
    with pytest.raises(UssegError, match=r"kmeans/old/eval/metrics.json is not a full evaluation file"):
        write_summary([folder], tmp_path / "s.md", tmp_path / "s.csv")
