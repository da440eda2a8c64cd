"""Bootstrap intervals over images, and `usseg compare`'s paired bootstrap of a difference."""

from __future__ import annotations

import json

import numpy as np
import pytest

from usseg.errors import UssegError

# Two classes on 2x2 images, two clusters.
GT = [[0, 0], [1, 1]]
GOOD = [[0, 0], [1, 1]]  # alone: every matching exact -> mIoU 1, pixel accuracy 1
# Alone: c0 = [1, 1], c1 = [1, 1]. Hungarian c0->0, c1->1: IoU 1/3 each -> mIoU 1/3, accuracy 1/2.
# Majority (ties -> class 0): both clusters -> class 0: IoU 2/4 and 0 -> mIoU 1/4, accuracy 1/2.
BAD = [[1, 0], [0, 1]]
# GOOD + BAD: c0 = [3, 1], c1 = [1, 3] -> both matchings c0->0, c1->1: IoU 3/5 each, accuracy 6/8.


def _split(root, gts, preds, dataset="tiny"):
    """A prepared split ``val`` of images 0..n-1 and a label-map folder of predictions."""
    from usseg.datasets.prepared import PreparedWriter, Sample, write_label

    rgb = np.zeros((2, 2, 3), np.uint8)
    samples = [Sample(f"im{i}", rgb, np.asarray(gt, np.uint8)) for i, gt in enumerate(gts)]
    PreparedWriter(root / "ds", dataset, ["sky", "sea"], has_background=False).write([("val", samples)])
    labels = root / "labels"
    labels.mkdir(parents=True)
    for i, pred in enumerate(preds):
        write_label(labels / f"im{i}.png", np.asarray(pred, np.uint8))
    (labels / "index.json").write_text(json.dumps({"num_labels": 2, "crf": "off", "split": "val"}))
    return root


def _evaluate(root, resamples=1000, seed=0, level=0.95):
    from usseg.evaluation.report import evaluate

    params = {"matching": "hungarian", "bootstrap": {"resamples": resamples, "seed": seed, "level": level}}
    return evaluate(root / "labels", root / "ds", "val", root / "eval", root / "metrics.json", params, 0,
                    {"experiment": root.name, "dataset": "tiny"})


def test_identical_images_collapse_the_interval_to_the_point(tmp_path):
    full = _evaluate(_split(tmp_path, [GT] * 4, [[[0, 0], [1, 0]]] * 4))
    for m in ("hungarian", "majority"):
        scores = full["protocols"]["default"][m]
        assert scores["mIoU_ci"] == [scores["mIoU"], scores["mIoU"]]
        assert scores["pixel_accuracy_ci"] == [0.75, 0.75]
    assert full["mIoU_ci"] == [full["mIoU"]] * 2 and full["bootstrap"]["resamples"] == 1000


def test_one_good_one_bad_image_known_bounds_reproducible(tmp_path):
    # Resamples are {good, good} (1/4), {good, bad} (1/2), {bad, bad} (1/4): the 2.5 % and 97.5 %
    # quantiles are the bad image alone and the good image alone.
    full = _evaluate(_split(tmp_path / "one", [GT, GT], [GOOD, BAD]), seed=7)
    default = full["protocols"]["default"]
    assert default["hungarian"]["mIoU"] == pytest.approx(0.6)
    assert default["hungarian"]["mIoU_ci"] == pytest.approx([1 / 3, 1.0])
    assert default["hungarian"]["pixel_accuracy"] == 0.75
    assert default["hungarian"]["pixel_accuracy_ci"] == [0.5, 1.0]
    assert default["majority"]["mIoU_ci"] == [0.25, 1.0]
    again = _evaluate(_split(tmp_path / "two", [GT, GT], [GOOD, BAD]), seed=7)
    assert again["protocols"] == full["protocols"]
    saved = json.loads((tmp_path / "one/eval/metrics.json").read_text())
    assert saved["protocols"]["default"]["hungarian"]["mIoU_ci"] == default["hungarian"]["mIoU_ci"]


def test_bootstrap_same_seed_same_numbers_other_seed_others():
    from usseg.evaluation.bootstrap import Settings, score_intervals

    rng = np.random.default_rng(0)
    per_image = rng.integers(0, 50, size=(15, 4, 3))
    first = score_intervals(per_image, Settings(200, 3, 0.95))
    assert score_intervals(per_image, Settings(200, 3, 0.95)) == first
    assert score_intervals(per_image, Settings(200, 4, 0.95)) != first


def test_resamples_zero_means_no_interval_keys(tmp_path):
    full = _evaluate(_split(tmp_path, [GT, GT], [GOOD, BAD]), resamples=0)
    text = (tmp_path / "eval/metrics.json").read_text()
    assert "_ci" not in text and "bootstrap" not in full
    assert full["protocols"]["default"]["hungarian"]["mIoU"] == pytest.approx(0.6)


def test_per_image_confusions_saved_with_ids(tmp_path):
    from usseg.evaluation.confusion import load_per_image

    _evaluate(_split(tmp_path, [GT, GT], [GOOD, BAD]), resamples=0)
    ids, dataset, split, stacks = load_per_image(tmp_path / "eval/confusions.npz")
    assert (ids, dataset, split, list(stacks)) == (["im0", "im1"], "tiny", "val", ["default"])
    assert stacks["default"].dtype == np.int64
    # rows: clusters 0, 1, unlabelled; columns: classes
    assert stacks["default"].tolist() == [[[2, 0], [0, 2], [0, 0]], [[1, 1], [1, 1], [0, 0]]]


def test_bad_bootstrap_params_name_the_key(tmp_path):
    with pytest.raises(UssegError, match=r"params evaluate.bootstrap.level: 1.5 is not in \(0, 1\)"):
        _evaluate(_split(tmp_path, [GT], [GOOD]), level=1.5)


# --- usseg compare ---


def _pair(tmp_path, preds_a, preds_b, dataset_b="tiny"):
    """Evaluations of A and B (every image's ground truth GT); their eval folders."""
    for name, preds, dataset in (("a", preds_a, "tiny"), ("b", preds_b, dataset_b)):
        _evaluate(_split(tmp_path / name, [GT] * len(preds), preds, dataset), resamples=0)
    return tmp_path / "a/eval", tmp_path / "b/eval"


# Per image, A is exact; B misses one pixel of four on every image.
MISS = [[0, 0], [1, 0]]


def test_compare_strictly_better_on_every_image(tmp_path):
    from usseg.evaluation.bootstrap import Settings
    from usseg.evaluation.compare import compare

    a, b = _pair(tmp_path, [GOOD] * 5, [MISS] * 5)
    rows = {(r["protocol"], r["matching"], r["score"]): r for r in compare(a, b, Settings(500, 0, 0.95))}
    # B per image: c0 = [2, 1], c1 = [0, 1] -> c0 -> sky, c1 -> sea: accuracy 3/4,
    # sky IoU 2/3 (tp 2, gt 2, pred 3), sea IoU 1/2 (tp 1, gt 2, pred 1): mIoU 7/12; A: 1 and 1.
    acc = rows[("default", "hungarian", "pixel_accuracy")]
    assert acc["difference"] == pytest.approx(0.25)
    # Every image is alike: every resample gives the same difference.
    assert acc["ci_low"] == pytest.approx(0.25) and acc["ci_high"] == pytest.approx(0.25)
    miou = rows[("default", "hungarian", "mIoU")]
    assert miou["difference"] == pytest.approx(5 / 12) and miou["beyond_noise"] and miou["ci_low"] > 0


def test_compare_better_on_average_but_mixed_images(tmp_path):
    from usseg.evaluation.bootstrap import Settings
    from usseg.evaluation.compare import compare, format_rows

    # A is exact on 4 images and worse on one; B misses a pixel on every image.
    a, b = _pair(tmp_path, [GOOD] * 4 + [BAD], [MISS] * 5)
    settings = Settings(1000, 0, 0.95)
    rows = compare(a, b, settings)
    acc = next(r for r in rows if (r["protocol"], r["matching"], r["score"]) == ("default", "hungarian",
                                                                              "pixel_accuracy"))
    # A: (16 + 2) / 20 = 0.9 correct; B: 15 / 20 = 0.75.
    assert acc["difference"] == pytest.approx(0.15)
    assert acc["ci_low"] < acc["difference"] < acc["ci_high"]
    assert compare(a, b, settings) == rows  # same seed, same numbers
    text = "\n".join(format_rows(rows, "A", "B", settings))
    assert "default    hungarian pixel_accuracy  +15.00" in text


def test_compare_identical_predictions_is_within_the_noise(tmp_path, capsys):
    from usseg.cli import main

    a, b = _pair(tmp_path, [GOOD, BAD, MISS], [GOOD, BAD, MISS])
    assert main(["compare", str(a), str(b), "--resamples", "300"]) == 0
    out = capsys.readouterr().out
    assert "default    hungarian mIoU             +0.00 [+0.00, +0.00]  within the noise" in out
    assert "beyond the noise" not in out


def test_compare_finds_experiments_by_name(tmp_path, capsys):
    from usseg.cli import main

    a, b = _pair(tmp_path / "x", [GOOD, BAD], [MISS, BAD])
    results = tmp_path / "results"
    for src, name in ((a, "exp-a"), (b, "exp-b")):
        (results / "kmeans" / name).mkdir(parents=True)
        src.rename(results / "kmeans" / name / "eval")
    assert main(["compare", "exp-a", "exp-b", "--results", str(results), "--resamples", "50"]) == 0
    assert f"A = {results}/kmeans/exp-a/eval, B = {results}/kmeans/exp-b/eval" in capsys.readouterr().out


def test_compare_refuses_other_images_naming_both(tmp_path):
    from usseg.evaluation.bootstrap import Settings
    from usseg.evaluation.compare import compare

    a, b = _pair(tmp_path, [GOOD, BAD], [GOOD, BAD, MISS])
    with pytest.raises(UssegError, match=rf"cannot compare {a} \(2 images\) with {b} \(3 images\): the image ids "
                                         r"differ \(only in A: \[\], only in B: \['im2'\]"):
        compare(a, b, Settings(10, 0, 0.95))


def test_compare_refuses_another_dataset_naming_both(tmp_path):
    from usseg.evaluation.bootstrap import Settings
    from usseg.evaluation.compare import compare

    a, b = _pair(tmp_path, [GOOD, BAD], [GOOD, BAD], dataset_b="other")
    with pytest.raises(UssegError, match=rf"cannot compare {a} \(dataset 'tiny', split 'val'\) with {b} "
                                         r"\(dataset 'other', split 'val'\): not the same images"):
        compare(a, b, Settings(10, 0, 0.95))
