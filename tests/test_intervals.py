"""Intervals over images (jackknife, chosen by coverage), and `usseg compare`'s paired interval of a difference."""

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
    from usseg.artifacts.prepared import PreparedWriter, Sample, write_label

    rgb = np.zeros((2, 2, 3), np.uint8)
    samples = [Sample(f"im{i}", rgb, np.asarray(gt, np.uint8)) for i, gt in enumerate(gts)]
    PreparedWriter(root / "ds", dataset, ["sky", "sea"], has_background=False).write([("val", samples)])
    labels = root / "labels"
    labels.mkdir(parents=True)
    for i, pred in enumerate(preds):
        write_label(labels / f"im{i}.png", np.asarray(pred, np.uint8))
    (labels / "index.json").write_text(json.dumps({"num_labels": 2, "crf": "off", "split": "val"}))
    return root


def _evaluate(root, method="jackknife", level=0.95):
    from usseg.evaluation.params import EvaluateParams
    from usseg.evaluation.report import evaluate
    from usseg.job_args import typed_params

    raw = {"matching": "hungarian", "intervals": {"method": method, "level": level}}
    params = typed_params(EvaluateParams, raw, "evaluate")
    return evaluate(
        root / "labels",
        root / "ds",
        "val",
        root / "eval",
        root / "metrics.json",
        params,
        0,
        {"experiment": root.name, "dataset": "tiny"},
    )


def test_identical_images_collapse_the_interval_to_the_point(tmp_path):
    full = _evaluate(_split(tmp_path, [GT] * 4, [[[0, 0], [1, 0]]] * 4))
    for m in ("hungarian", "majority"):
        scores = full["protocols"]["default"][m]
        assert scores["mIoU_ci"] == [scores["mIoU"], scores["mIoU"]]
        assert scores["pixel_accuracy_ci"] == [0.75, 0.75]
    assert full["mIoU_ci"] == [full["mIoU"]] * 2
    assert full["intervals"] == {"method": "jackknife", "level": 0.95, "over": "images"}


def test_one_good_one_bad_image_known_bounds_reproducible(tmp_path):
    # Under the split's matching (c0 -> 0, c1 -> 1), leaving the good image out leaves BAD:
    # mIoU 1/3, pixel accuracy 1/2; leaving BAD out leaves GOOD: 1 and 1. Jackknife se =
    # sqrt(1/2 x ((1/3 - 2/3)^2 + (1 - 2/3)^2)) = 1/3 for mIoU and 1/4 for pixel accuracy:
    # 0.6 -/+ 1.96 / 3 = [-0.053, 1.253] and 0.75 -/+ 0.49 = [0.26, 1.24], clipped to [0, 1].
    full = _evaluate(_split(tmp_path / "one", [GT, GT], [GOOD, BAD]))
    default = full["protocols"]["default"]
    assert default["hungarian"]["mIoU"] == pytest.approx(0.6)
    assert default["hungarian"]["mIoU_ci"] == [0.0, 1.0]
    assert default["hungarian"]["pixel_accuracy"] == 0.75
    assert default["hungarian"]["pixel_accuracy_ci"] == pytest.approx([0.75 - 1.959964 / 4, 1.0])
    assert default["majority"]["mIoU_ci"] == default["hungarian"]["mIoU_ci"]  # the same split matching
    again = _evaluate(_split(tmp_path / "two", [GT, GT], [GOOD, BAD]))
    assert again["protocols"] == full["protocols"]
    saved = json.loads((tmp_path / "one/eval/metrics.json").read_text())
    assert saved["protocols"]["default"]["hungarian"]["mIoU_ci"] == default["hungarian"]["mIoU_ci"]


def test_three_images_known_jackknife_interval():
    """Leave-one-out under the split's matching, by hand: GOOD, GOOD, BAD."""
    from usseg.evaluation.intervals import Settings, score_intervals

    good = np.array([[2, 0], [0, 2], [0, 0]])
    bad = np.array([[1, 1], [1, 1], [0, 0]])
    # all three: c0 = [5, 1], c1 = [1, 5]: accuracy 10/12. Without a GOOD: 6/8 (twice); without
    # BAD: 8/8. Mean 5/6; se = sqrt(2/3 x (2 x (3/4 - 5/6)^2 + (1 - 5/6)^2)) = sqrt(2/3 x 1/24) = 1/6.
    cis = score_intervals(np.stack([good, good, bad]), Settings("jackknife", 0.95))
    assert cis["hungarian"]["pixel_accuracy"] == pytest.approx([10 / 12 - 1.959964 / 6, 1.0])
    assert cis["majority"]["pixel_accuracy"] == cis["hungarian"]["pixel_accuracy"]


def test_method_none_means_no_interval_keys(tmp_path):
    full = _evaluate(_split(tmp_path, [GT, GT], [GOOD, BAD]), method="none")
    text = (tmp_path / "eval/metrics.json").read_text()
    assert "_ci" not in text and "intervals" not in full
    assert full["protocols"]["default"]["hungarian"]["mIoU"] == pytest.approx(0.6)


def test_per_image_confusions_saved_with_ids(tmp_path):
    from usseg.evaluation.confusion import load_per_image

    _evaluate(_split(tmp_path, [GT, GT], [GOOD, BAD]), method="none")
    ids, dataset, split, stacks = load_per_image(tmp_path / "eval/confusions.npz")
    assert (ids, dataset, split, list(stacks)) == (["im0", "im1"], "tiny", "val", ["default"])
    assert stacks["default"].dtype == np.int64
    # rows: clusters 0, 1, unlabelled; columns: classes
    assert stacks["default"].tolist() == [[[2, 0], [0, 2], [0, 0]], [[1, 1], [1, 1], [0, 0]]]


def test_bad_interval_params_name_the_key(tmp_path):
    # the schema's rule, met at the CLI boundary (typed_params), names the key
    with pytest.raises(
        UssegError, match=r"params evaluate\.intervals\.level: 1\.5 is greater than or equal to the max"
    ):
        _evaluate(_split(tmp_path, [GT], [GOOD]), level=1.5)


# --- usseg compare ---


def _pair(tmp_path, preds_a, preds_b, dataset_b="tiny"):
    """Evaluations of A and B (every image's ground truth GT); their eval folders."""
    for name, preds, dataset in (("a", preds_a, "tiny"), ("b", preds_b, dataset_b)):
        _evaluate(_split(tmp_path / name, [GT] * len(preds), preds, dataset), method="none")
    return tmp_path / "a/eval", tmp_path / "b/eval"


# Per image, A is exact; B misses one pixel of four on every image.
MISS = [[0, 0], [1, 0]]


def test_compare_strictly_better_on_every_image(tmp_path):
    from usseg.evaluation.compare import compare
    from usseg.evaluation.intervals import Settings

    a, b = _pair(tmp_path, [GOOD] * 5, [MISS] * 5)
    rows = {(r["protocol"], r["matching"], r["score"]): r for r in compare(a, b, Settings("jackknife", 0.95))}
    # B per image: c0 = [2, 1], c1 = [0, 1] -> c0 -> sky, c1 -> sea: accuracy 3/4,
    # sky IoU 2/3 (tp 2, gt 2, pred 3), sea IoU 1/2 (tp 1, gt 2, pred 1): mIoU 7/12; A: 1 and 1.
    acc = rows[("default", "hungarian", "pixel_accuracy")]
    assert acc["difference"] == pytest.approx(0.25)
    # Every image is alike: leaving any one out gives the same difference.
    assert acc["ci_low"] == pytest.approx(0.25) and acc["ci_high"] == pytest.approx(0.25)
    miou = rows[("default", "hungarian", "mIoU")]
    assert miou["difference"] == pytest.approx(5 / 12) and miou["beyond_noise"] and miou["ci_low"] > 0


def test_compare_better_on_average_but_mixed_images(tmp_path):
    from usseg.evaluation.compare import compare, format_rows
    from usseg.evaluation.intervals import Settings

    # A is exact on 4 images and worse on one; B misses a pixel on every image.
    a, b = _pair(tmp_path, [GOOD] * 4 + [BAD], [MISS] * 5)
    settings = Settings("jackknife", 0.95)
    rows = compare(a, b, settings)
    acc = next(
        r
        for r in rows
        if (r["protocol"], r["matching"], r["score"]) == ("default", "hungarian", "pixel_accuracy")
    )
    # A: (16 + 2) / 20 = 0.9 correct; B: 15 / 20 = 0.75.
    assert acc["difference"] == pytest.approx(0.15)
    # Leave-one-out differences: without a GOOD image (A 14/16, B 12/16) 0.125, four times;
    # without BAD (A 16/16, B 12/16) 0.25. se = sqrt(4/5 x (4 x 0.025^2 + 0.1^2)) = sqrt(0.01) = 0.1.
    assert acc["ci_low"] == pytest.approx(0.15 - 0.1959964) and acc["ci_high"] == pytest.approx(
        0.15 + 0.1959964
    )
    assert not acc["beyond_noise"]
    assert compare(a, b, settings) == rows  # same inputs, same numbers
    text = "\n".join(format_rows(rows, "A", "B", settings))
    assert "default    hungarian pixel_accuracy  +15.00" in text


def test_compare_identical_predictions_is_within_the_noise(tmp_path, capsys):
    from usseg.cli import main

    a, b = _pair(tmp_path, [GOOD, BAD, MISS], [GOOD, BAD, MISS])
    assert main(["compare", str(a), str(b)]) == 0
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
    assert main(["compare", "exp-a", "exp-b", "--results", str(results)]) == 0
    assert f"A = {results}/kmeans/exp-a/eval, B = {results}/kmeans/exp-b/eval" in capsys.readouterr().out


def test_compare_refuses_other_images_naming_both(tmp_path):
    from usseg.evaluation.compare import compare
    from usseg.evaluation.intervals import Settings

    a, b = _pair(tmp_path, [GOOD, BAD], [GOOD, BAD, MISS])
    with pytest.raises(
        UssegError,
        match=rf"cannot compare {a} \(2 images\) with {b} \(3 images\): the image ids "
        r"differ \(only in A: \[\], only in B: \['im2'\]",
    ):
        compare(a, b, Settings("jackknife", 0.95))


def test_compare_refuses_another_dataset_naming_both(tmp_path):
    from usseg.evaluation.compare import compare
    from usseg.evaluation.intervals import Settings

    a, b = _pair(tmp_path, [GOOD, BAD], [GOOD, BAD], dataset_b="other")
    with pytest.raises(
        UssegError,
        match=rf"cannot compare {a} \(dataset 'tiny', split 'val'\) with {b} "
        r"\(dataset 'other', split 'val'\): not the same images",
    ):
        compare(a, b, Settings("jackknife", 0.95))


# --- coverage on a simulated population (bench/interval_coverage.py) ---


@pytest.fixture(scope="module")
def population():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import interval_coverage

    return interval_coverage, interval_coverage.population(seed=0)


def test_intervals_cover_the_population_score_95_percent_of_the_time(population):
    """#20.1: the summary's interval must hold the population's split-level score 95 ± 3 % of the
    time at n >= 100 and always hold its own point. Measured through `score_intervals` itself on
    400 splits per n (one coverage estimate's standard error: 1.1 points). At n = 15 it is far
    from 95 %: a long tail of rare classes is not estimable from 15 images; the value is stated
    here, not hidden. The percentile bootstrap used before covered 19 % at n = 15
    (`python bench/interval_coverage.py` prints every candidate)."""
    bench, pop = population
    measured = {n: bench.project_coverage(pop.a, n, splits=400) for n in (15, 100, 1000)}
    for n in (100, 1000):
        assert 0.92 <= measured[n].covered <= 0.98, (n, measured[n])
    assert all(c.holds_point == 1.0 for c in measured.values())
    assert measured[15].covered == pytest.approx(0.8475, abs=1e-9)  # stated, not hidden: 85 % at n = 15


def test_paired_differences_cover_the_population_difference(population):
    """`usseg compare`'s interval of A - B, the same method, the same population and test."""
    bench, pop = population
    for n in (100, 1000):
        cov = bench.difference_coverage(pop, n, splits=400)
        assert 0.92 <= cov.covered <= 0.98 and cov.holds_point == 1.0, (n, cov)
