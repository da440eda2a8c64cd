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


def _write_scores(root, exp, scores, **fields):
    """A full metrics file of experiment ``exp`` whose default protocol has ``scores`` (matching -> key -> value)."""
    folder = _write(root, "kmeans", exp, "demo", "x", {})
    full = json.loads((folder / "metrics.json").read_text())
    for m, values in scores.items():
        full["protocols"]["default"][m].update(values)
    (folder / "metrics.json").write_text(json.dumps({**full, **fields}))
    return folder


def test_summary_shows_intervals(tmp_path):
    ci = {"mIoU_ci": [0.55, 0.8], "pixel_accuracy_ci": [0.6, 0.75]}
    folders = [_write_scores(tmp_path, "with-ci", {"hungarian": ci, "majority": ci}),
               _write(tmp_path, "kmeans", "no-ci", "demo", "x", {})]
    write_summary(folders, tmp_path / "s.md", tmp_path / "s.csv")
    table = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False).set_index("experiment")
    assert table.loc["with-ci", ["hungarian_mIoU", "hungarian_mIoU_ci_low", "hungarian_mIoU_ci_high"]].tolist() == [
        "70.0", "55.0", "80.0"]
    assert table.loc["with-ci", "majority_pixel_accuracy_ci_high"] == "75.0"
    assert table.loc["no-ci", "hungarian_mIoU_ci_low"] == "" and "seeds" not in table.columns
    md = (tmp_path / "s.md").read_text()
    assert "| 70.0 [55.0, 80.0] | 70.0 [60.0, 75.0] | 81.94 |" in md  # then mean F1 (no interval)
    assert "| 81.67 [55.0, 80.0] | 90.0 [60.0, 75.0] |" in md
    assert "| no-ci | kmeans | x | default | 2 | off | val | 2 | hungarian | 70.0 | 70.0 |" in md
    assert "_ci_low" not in md.split("## Detail")[1].split("| dataset |")[1]


def test_summary_mean_and_std_over_seeds(tmp_path):
    # mIoU 52, 58, 61 -> mean 57, sample std sqrt((25 + 1 + 16) / 2) = sqrt(21) = 4.58;
    # pixel accuracy 70, 80, 90 -> mean 80, std 10.
    folders = [
        _write_scores(tmp_path, f"km-seed{seed}", {"hungarian": {"mIoU": miou, "pixel_accuracy": acc}},
                      seed_group="km", seed=seed)
        for seed, miou, acc in ((0, 0.52, 0.7), (1, 0.58, 0.8), (2, 0.61, 0.9))
    ]
    folders.append(_write(tmp_path, "kmeans", "other", "demo", "x", {}))
    write_summary(folders, tmp_path / "s.md", tmp_path / "s.csv")
    table = pd.read_csv(tmp_path / "s.csv", dtype=str, keep_default_na=False).set_index("experiment")
    assert list(table.index) == ["other", "km-seed2", "km-seed1", "km", "km-seed0"]  # by headline mIoU
    km = table.loc["km"]
    assert (km["hungarian_mIoU"], km["hungarian_mIoU_std"]) == ("57.0", "4.58")
    assert (km["hungarian_pixel_accuracy"], km["hungarian_pixel_accuracy_std"]) == ("80.0", "10.0")
    assert (km["majority_mIoU"], km["majority_mIoU_std"]) == ("81.67", "0.0")  # majority untouched: equal runs
    assert km["seeds"] == "0, 1, 2" and table.loc["km-seed1", "seeds"] == "1" and table.loc["other", "seeds"] == ""
    assert table.loc["km-seed1", "hungarian_mIoU"] == "58.0" and table.loc["km-seed1", "hungarian_mIoU_std"] == ""
    md = (tmp_path / "s.md").read_text()
    row = "| demo | km | kmeans | x | default | 2 | off | val | 2 | hungarian | 0, 1, 2 | 57.0 ± 4.58 | 80.0 ± 10.0 |"
    assert row in md


def test_summary_opens_on_a_headline_table_of_ten_columns(tmp_path):
    """#20.3: the summary opened on one table of 27 columns."""
    ci = {"mIoU_ci": [0.55, 0.8], "pixel_accuracy_ci": [0.6, 0.75]}
    folders = [_write_scores(tmp_path, "with-ci", {"hungarian": ci, "majority": ci}),
               _write(tmp_path, "kmeans", "no-ci", "demo", "x", {})]
    write_summary(folders, tmp_path / "s.md", tmp_path / "s.csv", out_headline=tmp_path / "h.csv")
    md = (tmp_path / "s.md").read_text()
    first_table = md.split("## Headline\n\n")[1].split("\n\n")[0].splitlines()
    assert first_table[0] == ("| experiment | method | dataset | backbone | image size | CRF | mIoU [95 %] | "
                              "pixel accuracy [95 %] | published mIoU | difference |")
    assert first_table[2:] == ["| no-ci | kmeans | demo | x |  | off | 70.0 | 70.0 | none | none |",
                               "| with-ci | kmeans | demo | x |  | off | 70.0 [55.0, 80.0] | 70.0 [60.0, 75.0] | none | none |"]
    assert md.index("## Headline") < md.index("## Detail")
    headline = pd.read_csv(tmp_path / "h.csv", dtype=str, keep_default_na=False)
    assert len(headline.columns) == 10 and headline["mIoU [95 %]"].tolist() == ["70.0", "70.0 [55.0, 80.0]"]
