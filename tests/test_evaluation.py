"""Matching and metrics on hand-made confusion matrices with known answers."""

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
