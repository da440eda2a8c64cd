"""Matching and metrics on hand-made confusion matrices with known answers."""

import json

import numpy as np
import pytest

from usseg.errors import UssegError
from usseg.evaluation.confusion import Confusion, remap
from usseg.evaluation.matching import UNMATCHED, hungarian, majority
from usseg.evaluation.metrics import evaluate_counts


def test_hungarian_finds_permutation():
    counts = np.array([[0, 10, 1], [9, 0, 0], [1, 0, 7]])
    assert hungarian(counts).tolist() == [1, 0, 2]


def test_hungarian_leaves_surplus_clusters_unmatched():
    counts = np.array([[5, 0], [0, 5], [3, 1]])
    mapping = hungarian(counts)
    assert sorted(mapping.tolist()) == [UNMATCHED, 0, 1]
    assert mapping[2] == UNMATCHED


def test_majority_maps_many_to_one():
    counts = np.array([[5, 0], [0, 5], [3, 1]])
    assert majority(counts).tolist() == [0, 1, 0]


def test_metrics_known_answer():
    # clusters 0,1 -> classes 1,0; one unlabelled row (last).
    counts = np.array([[2, 8], [6, 1], [2, 0]])
    r = evaluate_counts(counts, "hungarian")
    assert r["mapping"] == [1, 0]
    valid = r["valid_pixels"]
    # class 0: tp 6, gt 8 (valid), pred 7 -> IoU 6/9; class 1: tp 8, gt 9, pred 10 -> 8/11
    assert valid["per_class_iou"] == pytest.approx([6 / 9, 8 / 11])
    assert valid["pixel_accuracy"] == pytest.approx(14 / 17)
    allp = r["all_pixels"]
    # the 2 unlabelled class-0 pixels count as wrong: class 0 gt 10 -> IoU 6/11
    assert allp["per_class_iou"] == pytest.approx([6 / 11, 8 / 11])
    assert allp["pixel_accuracy"] == pytest.approx(14 / 19)
    assert allp["mean_f1"] == pytest.approx(np.mean([2 * 6 / (10 + 7), 2 * 8 / (9 + 10)]))
    assert r["unlabelled_fraction"] == pytest.approx(2 / 19)


def test_absent_classes_do_not_count_in_miou():
    counts = np.array([[4, 0, 0], [0, 4, 0], [0, 0, 0]])
    r = evaluate_counts(counts, "hungarian")
    assert r["all_pixels"]["mIoU"] == pytest.approx(1.0)


def test_confusion_ignores_255_and_tracks_unlabelled():
    conf = Confusion(num_pred=2, num_classes=2)
    pred = np.array([[0, 1, 255], [1, 1, 0]], np.uint8)
    gt = np.array([[0, 1, 1], [255, 0, 0]], np.uint8)
    conf.update(pred, gt, "x")
    assert conf.counts.tolist() == [[2, 0], [1, 1], [0, 1]]


def test_confusion_rejects_shape_mismatch_naming_image():
    conf = Confusion(2, 2)
    with pytest.raises(UssegError, match="img7"):
        conf.update(np.zeros((2, 2), np.uint8), np.zeros((3, 2), np.uint8), "img7")


def test_remap_protocol():
    label = np.array([0, 1, 2, 255], np.uint8)
    assert remap(label, np.array([255, 0, 1])).tolist() == [255, 0, 1, 255]


# --- evaluate on a hand-made prepared split -------------------------------------------------------------
# Two images with ground truth (classes sky=0, sea=1; 255 ignored) and one without.
#   a: pred [[0,0,0],[1,1,1]]   gt [[0,0,0],[1,1,1]]
#   b: pred [[0,2,2],[2,1,1]]   gt [[0,0,1],[1,255,255]]
# Confusion (cluster x class): c0 [4, 0], c1 [0, 3], c2 [1, 2]; 5 sky and 5 sea pixels.
# Hungarian: c0->sky, c1->sea, c2 unmatched (its 3 pixels count wrong):
#   sky IoU 4/5, sea IoU 3/5 -> mIoU 0.7; pixel accuracy 7/10; per-class accuracy [4/5, 3/5].
# Majority: c0->sky, c1->sea, c2->sea:
#   sky IoU 4/5; sea tp 5, pred 6, gt 5 -> IoU 5/6 -> mIoU 49/60; pixel accuracy 9/10;
#   per-class accuracy [4/5, 5/5].
# Protocol "merged" (both classes -> one): Hungarian keeps c0 only -> IoU = accuracy 4/10; majority 10/10.
PRED = {"a": [[0, 0, 0], [1, 1, 1]], "b": [[0, 2, 2], [2, 1, 1]]}
GT = {"a": [[0, 0, 0], [1, 1, 1]], "b": [[0, 0, 1], [1, 255, 255]]}


@pytest.fixture
def split(tmp_path):
    from usseg.artifacts.prepared import PreparedWriter, Sample, write_label

    rgb = np.zeros((2, 3, 3), np.uint8)
    samples = [Sample(i, rgb, np.asarray(GT[i], np.uint8)) for i in ("a", "b")] + [Sample("c", rgb, None)]
    PreparedWriter(
        tmp_path / "ds",
        "tiny",
        ["sky", "sea"],
        has_background=False,
        protocols={"merged": {"classes": ["water_or_sky"], "map": [0, 0]}},
    ).write([("val", samples)])
    labels = tmp_path / "labels"
    labels.mkdir()
    for image_id, pred in PRED.items():
        write_label(labels / f"{image_id}.png", np.asarray(pred, np.uint8))
    (labels / "index.json").write_text(json.dumps({"num_labels": 3, "crf": "off", "split": "val"}))
    return tmp_path


def _evaluate(root, matching="hungarian", **params):
    from usseg.evaluation.params import EvaluateParams
    from usseg.evaluation.report import evaluate
    from usseg.job_args import typed_params

    extra = {"experiment": "x", "method": "kmeans", "dataset": "tiny", "setup": {"image_size": 448}}
    typed = typed_params(EvaluateParams, {"matching": matching, "intervals": {"method": "none", "level": 0.95},
                                          **params}, "evaluate")  # fmt: skip
    return evaluate(
        root / "labels", root / "ds", "val", root / "eval", root / "metrics" / "x.json", typed, 0, extra
    )


def test_evaluate_both_matchings_known_answer(split):
    full = _evaluate(split)
    compact = json.loads((split / "metrics/x.json").read_text())
    assert compact == {
        "mIoU": 70.0,
        "pixel_accuracy": 70.0,
        "hungarian": {"mIoU": 70.0, "pixel_accuracy": 70.0},
        "majority": {"mIoU": 81.67, "pixel_accuracy": 90.0},
        "merged": {
            "hungarian": {"mIoU": 40.0, "pixel_accuracy": 40.0},
            "majority": {"mIoU": 100.0, "pixel_accuracy": 100.0},
        },
    }
    assert json.loads((split / "eval/metrics.json").read_text()) == json.loads(json.dumps(full))
    default = full["protocols"]["default"]
    assert default["hungarian"]["mIoU"] == pytest.approx(0.7)
    assert default["majority"]["mIoU"] == pytest.approx(49 / 60)
    assert default["hungarian"]["per_class_accuracy"] == pytest.approx([4 / 5, 3 / 5])
    assert default["majority"]["per_class_accuracy"] == pytest.approx([4 / 5, 1.0])
    assert default["majority"]["per_class_iou"] == pytest.approx([4 / 5, 5 / 6])
    assert default["hungarian"]["cluster_to_class"] == [0, 1, UNMATCHED]
    assert default["majority"]["cluster_to_class"] == [0, 1, 1]
    assert full["num_images"] == 2 and full["images_without_ground_truth"] == 1
    assert full["setup"] == {"image_size": 448} and full["matching"] == "hungarian"
    assert "classes present in the split's ground truth" in full["miou_definition"]
    # The experiment's matching only picks the headline; both are always computed.
    _evaluate(split, "majority")
    compact = json.loads((split / "metrics/x.json").read_text())
    assert (compact["mIoU"], compact["hungarian"]["mIoU"], compact["majority"]["mIoU"]) == (
        81.67,
        70.0,
        81.67,
    )


def test_evaluate_missing_prediction_names_the_image(split):
    (split / "labels/b.png").unlink()
    with pytest.raises(UssegError, match="image 'b': no prediction"):
        _evaluate(split)


def test_mlflow_metrics_are_percent_for_both_matchings(split):
    from usseg.artifacts.metrics import mlflow_metrics

    flat = mlflow_metrics(_evaluate(split))
    assert flat["mIoU"] == 70.0 and flat["hungarian.mIoU"] == 70.0 and flat["majority.mIoU"] == 81.67
    assert flat["merged.majority.pixel_accuracy"] == 100.0 and flat["majority.valid.pixel_accuracy"] == 90.0
    assert flat["hungarian.mean_f1"] == pytest.approx(round(100 * np.mean([2 * 4 / 9, 2 * 3 / 8]), 2))


def test_default_protocol_always_scored(split):
    assert set(_evaluate(split, protocols=["default"])["protocols"]) == {"default"}
    assert set(_evaluate(split, protocols=["merged"])["protocols"]) == {"default", "merged"}
    assert json.loads((split / "metrics/x.json").read_text())["mIoU"] == 70.0
