"""Per-class IoU, accuracy and F1, mIoU, pixel accuracy from a matched confusion matrix."""

from __future__ import annotations

from typing import Any

import numpy as np

from usseg.evaluation.matching import MATCHERS, UNMATCHED


def class_confusion(counts: np.ndarray, mapping: np.ndarray, num_classes: int) -> np.ndarray:
    """(predicted class x true class); unmatched clusters land in an extra 'none' row."""
    out = np.zeros((num_classes + 1, num_classes), np.int64)
    target = np.where(mapping == UNMATCHED, num_classes, mapping)
    np.add.at(out, target, counts)
    return out


def scores(cm: np.ndarray) -> dict[str, Any]:
    """Metrics from (predicted class + none row) x true class counts.

    Per-class accuracy is recall (correct pixels of c / ground-truth pixels of c); classes
    absent from the ground truth get None and stay out of the means.
    """
    num_classes = cm.shape[1]
    tp = np.diag(cm[:num_classes]).astype(np.float64)
    gt = cm.sum(axis=0).astype(np.float64)
    pred = cm[:num_classes].sum(axis=1).astype(np.float64)
    union = gt + pred - tp
    present = gt > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, tp / union, np.nan)
        f1 = np.where(gt + pred > 0, 2 * tp / (gt + pred), np.nan)
        accuracy = np.where(present, tp / gt, np.nan)
    total = gt.sum()
    return {
        "mIoU": float(np.nanmean(iou[present])) if present.any() else 0.0,
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "mean_f1": float(np.nanmean(f1[present])) if present.any() else 0.0,
        "per_class_iou": [None if np.isnan(v) else float(v) for v in iou],
        "per_class_accuracy": [None if np.isnan(v) else float(v) for v in accuracy],
        "per_class_f1": [None if np.isnan(v) else float(v) for v in f1],
        "pixels": int(total),
    }


def evaluate_counts(counts: np.ndarray, matching: str) -> dict[str, Any]:
    """Match clusters on labelled predictions, then score all pixels and valid pixels.

    The last row of ``counts`` holds pixels the method left unlabelled: counted wrong
    under "all pixels", excluded under "valid pixels".
    """
    labelled = counts[:-1]
    num_classes = counts.shape[1]
    mapping = MATCHERS[matching](labelled)
    cm = class_confusion(labelled, mapping, num_classes)
    cm_all = cm.copy()
    cm_all[num_classes] += counts[-1]
    return {
        "mapping": mapping.tolist(),
        "all_pixels": scores(cm_all),
        "valid_pixels": scores(cm),
        "class_confusion": cm_all,
        "unlabelled_fraction": float(counts[-1].sum() / max(counts.sum(), 1)),
    }
