"""CLI of the evaluation stage."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The experiment's headline scores in % (the units of results/summary.md).

    Reads the dict `usseg.evaluation.report.evaluate` returns: the one place that knows
    its layout, for the parent run's metrics and for `usseg trace`.
    """
    return {k: 100.0 * float(metrics[k]) for k in ("mIoU", "pixel_accuracy")}


def headline_tags(metrics: dict[str, Any]) -> dict[str, str]:
    """How the headline was scored (protocol, matching, CRF, split), for the parent run's tags."""
    protocol = "default" if "default" in metrics["protocols"] else next(iter(metrics["protocols"]))
    return {"protocol": protocol, **{k: str(metrics[k]) for k in ("matching", "crf", "split")}}


def _evaluate(args: argparse.Namespace) -> None:
    from usseg.artifacts.metrics import mlflow_metrics
    from usseg.evaluation.report import evaluate
    from usseg.tracking import job_run, log_experiment_metrics, log_figure, log_input, log_metrics, log_output

    with job_run(job="evaluate", params=args.params, experiment=args.experiment):
        log_input(Path(args.labels), "labels")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        exp = args.experiment or {}
        extra = {k: exp[k] for k in ("method", "dataset", "backbone", "seed_group", "seed") if k in exp}
        if "name" in exp:
            extra["experiment"] = exp["name"]
        extra["setup"] = dict(exp.get("setup", {}))
        metrics = evaluate(
            Path(args.labels),
            Path(args.dataset_dir),
            args.split,
            Path(args.out),
            Path(args.metrics),
            args.config,
            args.pictures,
            extra,
        )
        log_output(Path(args.metrics), "metrics")
        log_output(Path(args.out), "report")
        # percent; the headline keys unrounded, equal to the parent's (`usseg trace` compares them)
        log_metrics({**mlflow_metrics(metrics), **headline(metrics)})
        if args.experiment:
            log_experiment_metrics(headline(metrics), headline_tags(metrics))
        for png in sorted(Path(args.out).rglob("*.png")):
            log_figure(png, "pictures" if png.parent.name != "overlays" else "pictures/overlays")
        scores = metrics["protocols"]["default"]
        both = "  ".join(
            f"{m}: mIoU {_with_ci(scores[m], 'mIoU')} pixel accuracy {_with_ci(scores[m], 'pixel_accuracy')}"
            for m in ("hungarian", "majority")
        )
        print(
            f"{both}  (headline {metrics['matching']}, crf {metrics['crf']}, split {metrics['split']}, "
            f"{metrics['num_images']} images)"
        )


def _with_ci(scores: dict[str, Any], key: str) -> str:
    """A score in percent, with its interval over images when evaluate computed one."""
    text = f"{100 * scores[key]:.2f}"
    if f"{key}_ci" in scores:
        low, high = scores[f"{key}_ci"]
        text += f" [{100 * low:.2f}, {100 * high:.2f}]"
    return text


def _summary(args: argparse.Namespace) -> None:
    from usseg.evaluation.summary import write_summary

    write_summary(
        [Path(p) for p in args.metrics],
        Path(args.out_md),
        Path(args.out_csv),
        out_headline=Path(args.out_headline) if args.out_headline else None,
    )


def _grid(args: argparse.Namespace) -> None:
    from usseg.artifacts.prepared import PreparedDataset
    from usseg.errors import UssegError
    from usseg.evaluation.grid import grid_figure, read_row

    if len(args.eval) != len(args.labels):
        raise UssegError(f"usseg grid: {len(args.eval)} --eval but {len(args.labels)} --labels folders")
    rows = [read_row(Path(e), Path(lab)) for e, lab in zip(args.eval, args.labels)]
    grid = grid_figure(PreparedDataset(Path(args.dataset_dir)), rows, args.images, Path(args.out))
    print(f"{args.out}: {len(grid.rows)} rows x {len(grid.columns)} images")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.evaluation.params import EvaluateParams
    from usseg.job_args import add_job_args

    p = sub.add_parser("evaluate", help="score label maps against ground truth")
    p.add_argument("--labels", required=True, help="folder of {id}.png label maps with index.json")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder, e.g. data/prepared/demo")
    p.add_argument("--split", required=True, help="the split to process, e.g. val")
    p.add_argument("--out", required=True, help="report folder (full metrics.json, tables, pictures)")
    p.add_argument("--metrics", required=True, help="compact metrics JSON in percent (DVC metrics file)")
    p.add_argument("--pictures", type=int, default=4, help="overlays to draw")
    add_job_args(p, "evaluate", typed=EvaluateParams)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("summary", help="one table over all experiments' metrics")
    p.add_argument(
        "metrics", nargs="+", help="report folders results/{method}/{exp}/eval (or their metrics.json)"
    )
    p.add_argument("--out-md", required=True, help="summary table (Markdown), e.g. results/summary.md")
    p.add_argument("--out-csv", required=True, help="summary table (CSV), e.g. results/summary.csv")
    p.add_argument(
        "--out-headline",
        default=None,
        help="the headline table alone (CSV), e.g. results/summary_headline.csv (the report's first page)",
    )
    p.set_defaults(func=_summary)

    p = sub.add_parser("grid", help="the same images across every experiment on one dataset, one picture")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder whose images the grid shows")
    p.add_argument("--eval", action="append", default=[], help="an experiment's report folder (repeat)")
    p.add_argument("--labels", action="append", default=[], help="its final label maps, in --eval order")
    p.add_argument("--images", type=int, default=4, help="images (columns) to draw")
    p.add_argument("--out", required=True, help="PNG file")
    p.set_defaults(func=_grid)
