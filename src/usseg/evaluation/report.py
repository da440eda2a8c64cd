"""`usseg evaluate`: label maps + ground truth -> metrics files, tables and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from usseg.artifacts.atomic import atomic_dir, write_json
from usseg.artifacts.label_maps import read_index, read_map
from usseg.artifacts.metrics import FULL_NAME, MIOU_DEFINITION, compact
from usseg.artifacts.prepared import PreparedDataset, Record
from usseg.errors import UssegError
from usseg.evaluation.confusion import PER_IMAGE_NAME, Confusion, remap, save_per_image
from usseg.evaluation.intervals import SCORES, score_intervals
from usseg.evaluation.matching import MATCHERS, UNMATCHED
from usseg.evaluation.metrics import evaluate_counts
from usseg.evaluation.params import EvaluateParams
from usseg.evaluation.pictures import confusion_figure, overlay_colours, overlay_figure, per_class_figure


def accumulate(
    dataset: PreparedDataset,
    records: list[Record],
    labels_dir: Path,
    num_pred: int,
    protocols: dict[str, Any],
) -> dict[str, Confusion]:
    """One pass over ``records`` (images with ground truth) fills one confusion matrix per class protocol.

    Every such image must have a prediction: a missing one is an error naming the image.
    """
    confusions = {name: Confusion(num_pred, len(p["classes"])) for name, p in protocols.items()}
    tables = {
        name: (np.asarray(p["map"], np.uint8) if p["map"] is not None else None)
        for name, p in protocols.items()
    }
    for record in tqdm(records, desc="evaluate", unit="img"):
        gt = dataset.load_label(record)
        pred = read_map(labels_dir, record.id)
        for name, conf in confusions.items():
            conf.update(pred, remap(gt, tables[name]), record.id)
    return confusions


def score_protocol(
    counts: np.ndarray, classes: list[str]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Both matchings from one confusion matrix: the protocol's metrics entry, and each matching's details."""
    results = {m: evaluate_counts(counts, m) for m in MATCHERS}
    entry: dict[str, Any] = {
        "classes": list(classes),
        "num_classes": len(classes),
        "unlabelled_fraction": results["hungarian"]["unlabelled_fraction"],
    }
    for m, result in results.items():
        allp, valid = result["all_pixels"], result["valid_pixels"]
        entry[m] = {
            **{k: allp[k] for k in ("mIoU", "pixel_accuracy", "mean_f1")},
            **{k: allp[k] for k in ("per_class_iou", "per_class_accuracy", "per_class_f1")},
            "cluster_to_class": result["mapping"],
            "valid_pixels": {k: valid[k] for k in ("mIoU", "pixel_accuracy", "mean_f1")},
        }
    return entry, results


def evaluate(
    labels_dir: Path,
    dataset_dir: Path,
    split: str,
    out: Path,
    metrics_path: Path,
    params: EvaluateParams,
    pictures: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score ``labels_dir`` under every class protocol and both matchings; write the full metrics
    (``out/metrics.json``) and the compact DVC metrics (``metrics_path``).

    ``params.matching`` only picks the headline (default protocol, always scored;
    ``params.protocols`` selects the others). ``params.intervals`` (method jackknife) adds
    ``{score}_ci`` = [low, high] beside mIoU and pixel accuracy, an interval over images; the
    per-image confusion matrices are kept in ``out/confusions.npz`` for ``usseg compare``.
    Images of the split without ground truth are not scored: ``num_images`` counts the scored
    ones. ``extra`` (experiment, method, dataset, backbone, setup...) is recorded as is.
    """
    dataset = PreparedDataset(dataset_dir)
    index = read_index(labels_dir)
    protocols = dataset.protocols()
    wanted = params.protocols
    if wanted:
        unknown = set(wanted) - set(protocols)
        if unknown:
            raise UssegError(
                f"params evaluate.protocols: {sorted(unknown)} not defined by dataset {dataset.name!r}"
            )
        protocols = {k: v for k, v in protocols.items() if k == "default" or k in wanted}
    matching, settings = params.matching, params.intervals
    records = dataset.records(split)
    scored = [r for r in records if r.label_path is not None]
    if not scored:
        raise UssegError(f"dataset {dataset.name!r}: split {split!r} has no ground truth to evaluate")
    confusions = accumulate(dataset, scored, labels_dir, int(index["num_labels"]), protocols)
    metrics: dict[str, Any] = {
        **(extra or {}),
        "matching": matching,
        "split": split,
        "crf": str(index.get("crf", "unknown")),
        "num_labels": int(index["num_labels"]),
        "num_images": len(scored),
        "images_without_ground_truth": len(records) - len(scored),
        "units": "fractions in [0, 1] (the DVC metrics file and the summary are in percent)",
        "miou_definition": MIOU_DEFINITION,
        "protocols": {},
    }
    if settings.enabled:
        metrics["intervals"] = {**settings.as_dict(), "over": "images"}
    with atomic_dir(out) as tmp:
        for name, conf in confusions.items():
            classes = protocols[name]["classes"]
            entry, results = score_protocol(conf.counts, classes)
            if settings.enabled:
                for m, cis in score_intervals(conf.per_image(), settings).items():
                    entry[m].update({f"{k}_ci": cis[k] for k in SCORES})
            metrics["protocols"][name] = entry
            _write_tables(tmp, name, classes, results)
            head, scores = results[matching], results[matching]["all_pixels"]
            title = f"{name}: mIoU {100 * scores['mIoU']:.1f}, {matching} matching, crf {metrics['crf']}"
            confusion_figure(head["class_confusion"], classes, tmp / f"confusion_{name}.png", title)
            per_class_figure(scores["per_class_iou"], classes, tmp / f"per_class_iou_{name}.png", title)
            if name == "default":
                _overlays(tmp, dataset, scored[:pictures], labels_dir, np.asarray(head["mapping"]))
        headline = metrics["protocols"]["default"][matching]
        headline_keys = ("mIoU", "pixel_accuracy", "mean_f1", *(f"{k}_ci" for k in SCORES))
        metrics.update({k: headline[k] for k in headline_keys if k in headline})
        save_per_image(
            tmp / PER_IMAGE_NAME,
            [r.id for r in scored],
            dataset.name,
            split,
            {name: conf.per_image() for name, conf in confusions.items()},
        )
        write_json(tmp / FULL_NAME, metrics)
    write_json(metrics_path, compact(metrics))
    return metrics


def _write_tables(folder: Path, name: str, classes: list[str], results: dict[str, dict[str, Any]]) -> None:
    """Per-class scores, confusion matrices and cluster-to-class mappings of both matchings."""
    columns: dict[str, list[Any]] = {"class": list(classes)}
    for m, result in results.items():
        allp, valid = result["all_pixels"], result["valid_pixels"]
        for key in ("iou", "accuracy", "f1"):
            columns[f"{m}_{key}"] = allp[f"per_class_{key}"]
        columns[f"{m}_iou_valid_pixels"] = valid["per_class_iou"]
        np.savetxt(folder / f"confusion_{name}_{m}.csv", result["class_confusion"], fmt="%d", delimiter=",")
    pd.DataFrame(columns).to_csv(folder / f"per_class_{name}.csv", index=False)
    write_json(
        folder / f"mapping_{name}.json",
        {**{m: r["mapping"] for m, r in results.items()}, "unmatched": UNMATCHED},
    )


def _overlays(
    folder: Path, dataset: PreparedDataset, records: list[Record], labels_dir: Path, mapping: np.ndarray
) -> None:
    """Draw ``records`` with each cluster in the colour of its matched class, with a class legend."""
    if not records:
        return
    (folder / "overlays").mkdir()
    palette = np.asarray(dataset.meta["palette"], np.uint8)
    for record in records:
        overlay = overlay_colours(
            read_map(labels_dir, record.id), dataset.load_label(record), mapping, palette, dataset.classes
        )
        path = folder / "overlays" / f"{record.id}.png"
        overlay_figure(dataset.load_image(record), overlay, path, record.id)
