"""The two metrics files of an evaluation, and how the readers find them.

- full: ``results/{method}/{exp}/eval/metrics.json``: fractions in [0, 1], every protocol,
  both matchings, per-class IoU / accuracy / F1, cluster-to-class mappings, the run's
  strings (method, dataset, split, crf...) and the experiment's ``setup``. The summary and
  the datus2 benchmark read it.
- compact: ``results/metrics/{method}/{exp}.json`` (DVC's metrics file): numbers only, in
  percent, 2 decimals: the headline and both matchings per protocol.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from usseg.errors import UssegError

FULL_NAME = "metrics.json"
MATCHERS = ("hungarian", "majority")  # every file scores both (usseg.evaluation.matching)
MIOU_DEFINITION = (
    "mIoU = mean over the classes present in the split's ground truth (at least one labelled pixel) of "
    "IoU = TP / (TP + FP + FN), from one confusion matrix accumulated over the whole split after matching "
    "clusters to classes over the whole split; ground-truth pixels labelled 255 are ignored; pixels the "
    "method left unlabelled count as wrong (all pixels) or are left out (valid pixels)"
)
SCORES = ("mIoU", "pixel_accuracy")


def pct(value: float) -> float:
    """A fraction as a percentage rounded to 2 decimals (the unit of every report)."""
    return round(100 * float(value), 2)


def compact(full: dict[str, Any]) -> dict[str, Any]:
    """The DVC metrics of ``full``: headline + both matchings (default protocol), one object per other protocol."""

    def per_matching(proto: dict[str, Any]) -> dict[str, Any]:
        return {m: {k: pct(proto[m][k]) for k in SCORES} for m in MATCHERS}

    protocols = full["protocols"]
    default = protocols["default"]
    out: dict[str, Any] = {k: pct(default[full["matching"]][k]) for k in SCORES}
    out.update(per_matching(default))
    out.update({name: per_matching(p) for name, p in protocols.items() if name != "default"})
    return out


def mlflow_metrics(full: dict[str, Any]) -> dict[str, float]:
    """Flat percent metrics for MLflow: ``mIoU``, ``hungarian.mIoU``, ``stuff15.majority.mIoU``, ..."""
    flat: dict[str, float] = {}

    def walk(prefix: str, obj: dict[str, Any]) -> None:
        for key, value in obj.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = value

    walk("", compact(full))
    for name, proto in full["protocols"].items():
        prefix = "" if name == "default" else f"{name}."
        for m in MATCHERS:
            flat[f"{prefix}{m}.mean_f1"] = pct(proto[m]["mean_f1"])
            flat.update({f"{prefix}{m}.valid.{k}": pct(proto[m]["valid_pixels"][k]) for k in SCORES})
    return flat


def load_full(path: Path) -> dict[str, Any]:
    """Read a full metrics file, given as the file or as the evaluate report folder holding it."""
    file = path / FULL_NAME if path.is_dir() else path
    try:
        metrics = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UssegError(f"cannot read metrics {file}: {exc}") from exc
    protocols = metrics.get("protocols") if isinstance(metrics, dict) else None
    if not protocols or any(m not in p for p in protocols.values() for m in MATCHERS):
        raise UssegError(
            f"{file} is not a full evaluation file (protocols with {sorted(MATCHERS)} scores); "
            "if it predates both matchings, re-run its evaluation: snakemake --forcerun evaluate"
        )
    return metrics


def identity(path: Path, metrics: dict[str, Any]) -> tuple[str, str]:
    """(experiment, method): recorded in the file, else from results/{method}/{exp}/eval/metrics.json."""
    exp_dir = (path if path.is_dir() else path.parent).parent
    return str(metrics.get("experiment") or exp_dir.name), str(metrics.get("method") or exp_dir.parent.name)
