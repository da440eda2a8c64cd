"""`usseg evaluate` and `usseg summary`: label maps + ground truth -> metrics and pictures."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from usseg.atomic import atomic_dir, write_json
from usseg.datasets.prepared import PreparedDataset, Record, read_label
from usseg.errors import UssegError
from usseg.evaluation.confusion import Confusion, remap
from usseg.evaluation.matching import UNMATCHED
from usseg.evaluation.metrics import evaluate_counts
from usseg.evaluation.pictures import confusion_figure, overlay_figure, per_class_figure
from usseg.tables import write_tables


def load_prediction(labels_dir: Path, image_id: str) -> np.ndarray:
    path = labels_dir / f"{image_id}.png"
    if not path.is_file():
        raise UssegError(f"image {image_id!r}: no prediction {path}")
    return read_label(path, image_id)


def accumulate(dataset: PreparedDataset, records: list[Record], split: str, labels_dir: Path, num_pred: int,
               protocols: dict[str, Any]) -> dict[str, Confusion]:
    """One pass over the split fills one confusion matrix per class protocol."""
    confusions = {name: Confusion(num_pred, len(p["classes"])) for name, p in protocols.items()}
    tables = {name: (np.asarray(p["map"], np.uint8) if p["map"] is not None else None)
              for name, p in protocols.items()}
    records = [r for r in records if r.label_path is not None]
    if not records:
        raise UssegError(f"dataset {dataset.name!r}: split {split!r} has no ground truth to evaluate")
    for record in tqdm(records, desc="evaluate", unit="img"):
        gt = dataset.load_label(record)
        pred = load_prediction(labels_dir, record.id)
        for name, conf in confusions.items():
            conf.update(pred, remap(gt, tables[name]), record.id)
    return confusions


def evaluate(labels_dir: Path, dataset_dir: Path, split: str, out: Path, metrics_path: Path,
             params: dict[str, Any], pictures: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Score ``labels_dir`` under every class protocol; ``extra`` (method, dataset...) is recorded."""
    dataset = PreparedDataset(dataset_dir)
    index_path = labels_dir / "index.json"
    if not index_path.is_file():
        raise UssegError(f"{labels_dir} has no index.json: it is not a finished label-map folder")
    index = json.loads(index_path.read_text())
    protocols = dataset.protocols()
    wanted = params.get("protocols")
    if wanted:
        unknown = set(wanted) - set(protocols)
        if unknown:
            raise UssegError(f"params evaluate.protocols: {sorted(unknown)} not defined by dataset {dataset.name!r}")
        protocols = {k: v for k, v in protocols.items() if k in wanted}
    matching = params["matching"]
    records = dataset.records(split)
    confusions = accumulate(dataset, records, split, labels_dir, int(index["num_labels"]), protocols)
    context = {"matching": matching, "split": split, "crf": str(index.get("crf", "unknown")),
               "num_labels": int(index["num_labels"]), "num_images": len(records)}
    metrics: dict[str, Any] = {**(extra or {}), **context, "protocols": {}}
    with atomic_dir(out) as tmp:
        for name, conf in confusions.items():
            result = evaluate_counts(conf.counts, matching)
            classes = protocols[name]["classes"]
            allp, valid = result["all_pixels"], result["valid_pixels"]
            metrics["protocols"][name] = {
                "classes": len(classes),
                "mIoU": allp["mIoU"], "pixel_accuracy": allp["pixel_accuracy"], "mean_f1": allp["mean_f1"],
                "valid_pixels": {k: valid[k] for k in ("mIoU", "pixel_accuracy", "mean_f1")},
                "unlabelled_fraction": result["unlabelled_fraction"],
            }
            _write_tables(tmp, name, classes, result)
            title = f"{name}: mIoU {100 * allp['mIoU']:.1f}, {matching} matching, crf {context['crf']}"
            confusion_figure(result["class_confusion"], classes, tmp / f"confusion_{name}.png", title)
            per_class_figure(allp["per_class_iou"], classes, tmp / f"per_class_iou_{name}.png", title)
            if name == "default":
                _overlays(tmp, dataset, records[:pictures], labels_dir, np.asarray(result["mapping"]))
        default = metrics["protocols"].get("default") or next(iter(metrics["protocols"].values()))
        metrics.update({k: default[k] for k in ("mIoU", "pixel_accuracy", "mean_f1")})
        write_json(tmp / "metrics.json", metrics)
    write_json(metrics_path, metrics)
    return metrics


def _write_tables(folder: Path, name: str, classes: list[str], result: dict[str, Any]) -> None:
    with (folder / f"per_class_{name}.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["class", "iou", "f1", "iou_valid_pixels", "f1_valid_pixels"])
        allp, valid = result["all_pixels"], result["valid_pixels"]
        for i, cls in enumerate(classes):
            writer.writerow([cls, allp["per_class_iou"][i], allp["per_class_f1"][i],
                             valid["per_class_iou"][i], valid["per_class_f1"][i]])
    np.savetxt(folder / f"confusion_{name}.csv", result["class_confusion"], fmt="%d", delimiter=",")
    write_json(folder / f"mapping_{name}.json", {"cluster_to_class": result["mapping"], "unmatched": UNMATCHED})


def _overlays(folder: Path, dataset: PreparedDataset, records: list[Record], labels_dir: Path,
              mapping: np.ndarray) -> None:
    """Draw ``records`` with predictions mapped to class colours."""
    if not records:
        return
    (folder / "overlays").mkdir()
    palette = np.asarray(dataset.meta["palette"], np.uint8)
    lut = np.full(256, 255, np.uint8)
    lut[: len(mapping)] = np.where(mapping == UNMATCHED, 255, mapping)
    for record in records:
        pred = lut[load_prediction(labels_dir, record.id)]
        overlay_figure(dataset.load_image(record), dataset.load_label(record), pred, palette,
                       folder / "overlays" / f"{record.id}.png", record.id)


SUMMARY_FIELDS = ["experiment", "method", "dataset", "backbone", "protocol", "matching", "crf", "split",
                  "images", "mIoU", "pixel_accuracy", "mean_f1", "mIoU_valid", "unlabelled"]


def summary_rows(metric_files: list[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(metric_files):
        m = json.loads(path.read_text())
        for proto, p in m["protocols"].items():
            rows.append({
                "experiment": path.stem, "method": path.parent.name, "dataset": m.get("dataset", ""),
                "backbone": m.get("backbone", ""), "protocol": proto, "matching": m["matching"],
                "crf": m["crf"], "split": m["split"], "images": m["num_images"],
                "mIoU": round(100 * p["mIoU"], 2), "pixel_accuracy": round(100 * p["pixel_accuracy"], 2),
                "mean_f1": round(100 * p["mean_f1"], 2), "mIoU_valid": round(100 * p["valid_pixels"]["mIoU"], 2),
                "unlabelled": round(100 * p["unlabelled_fraction"], 2),
            })
    return rows


def write_summary(metric_files: list[Path], out_md: Path, out_csv: Path) -> None:
    preamble = ["# Results", "", "Scores in %, matched over the whole split. `mIoU_valid` scores only pixels the",
                "method labelled; `unlabelled` is the share of pixels it left unlabelled (counted wrong in mIoU).", ""]
    write_tables(summary_rows(metric_files), SUMMARY_FIELDS, out_csv, out_md, preamble)
