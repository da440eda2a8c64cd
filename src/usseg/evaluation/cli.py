"""CLI of the evaluation stage."""

from __future__ import annotations

import argparse
from pathlib import Path


def _evaluate(args: argparse.Namespace) -> None:
    from usseg.evaluation.metrics_files import mlflow_metrics
    from usseg.evaluation.report import evaluate
    from usseg.tracking import job_run, log_figure, log_input, log_metrics

    with job_run(job="evaluate", params=args.params, experiment=args.experiment):
        log_input(Path(args.labels), "labels")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        exp = args.experiment or {}
        extra = {k: exp[k] for k in ("method", "dataset", "backbone") if k in exp}
        if "name" in exp:
            extra["experiment"] = exp["name"]
        extra["setup"] = dict(exp.get("setup", {}))
        metrics = evaluate(Path(args.labels), Path(args.dataset_dir), args.split, Path(args.out),
                           Path(args.metrics), args.params, args.pictures, extra)
        log_metrics(mlflow_metrics(metrics))
        for png in sorted(Path(args.out).rglob("*.png")):
            log_figure(png, "pictures" if png.parent.name != "overlays" else "pictures/overlays")
        scores = metrics["protocols"]["default"]
        both = "  ".join(f"{m}: mIoU {100 * s['mIoU']:.2f} pixel accuracy {100 * s['pixel_accuracy']:.2f}"
                         for m, s in ((m, scores[m]) for m in ("hungarian", "majority")))
        print(f"{both}  (headline {metrics['matching']}, crf {metrics['crf']}, split {metrics['split']}, "
              f"{metrics['num_images']} images)")


def _summary(args: argparse.Namespace) -> None:
    from usseg.evaluation.summary import write_summary

    write_summary([Path(p) for p in args.metrics], Path(args.out_md), Path(args.out_csv))


def _grid(args: argparse.Namespace) -> None:
    from usseg.datasets.prepared import PreparedDataset
    from usseg.errors import UssegError
    from usseg.evaluation.grid import grid_figure, read_row

    if len(args.eval) != len(args.labels):
        raise UssegError(f"usseg grid: {len(args.eval)} --eval but {len(args.labels)} --labels folders")
    rows = [read_row(Path(e), Path(lab)) for e, lab in zip(args.eval, args.labels)]
    grid = grid_figure(PreparedDataset(Path(args.dataset_dir)), rows, args.images, Path(args.out))
    print(f"{args.out}: {len(grid.rows)} rows x {len(grid.columns)} images")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.cli import add_job_args

    p = sub.add_parser("evaluate", help="score label maps against ground truth")
    p.add_argument("--labels", required=True, help="folder of {id}.png label maps with index.json")
    p.add_argument("--dataset-dir", required=True)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, help="report folder (full metrics.json, tables, pictures)")
    p.add_argument("--metrics", required=True, help="compact metrics JSON in percent (DVC metrics file)")
    p.add_argument("--pictures", type=int, default=4, help="overlays to draw")
    add_job_args(p)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("summary", help="one table over all experiments' metrics")
    p.add_argument("metrics", nargs="+", help="report folders results/{method}/{exp}/eval (or their metrics.json)")
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-csv", required=True)
    p.set_defaults(func=_summary)

    p = sub.add_parser("grid", help="the same images across every experiment on one dataset, one picture")
    p.add_argument("--dataset-dir", required=True)
    p.add_argument("--eval", action="append", default=[], help="an experiment's report folder (repeat)")
    p.add_argument("--labels", action="append", default=[], help="its final label maps, in --eval order")
    p.add_argument("--images", type=int, default=4, help="images (columns) to draw")
    p.add_argument("--out", required=True, help="PNG file")
    p.set_defaults(func=_grid)
