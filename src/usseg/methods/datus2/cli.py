"""`usseg datus2-*`: the DatUS² branch's jobs and its backbone benchmark."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def _segments(args: argparse.Namespace) -> None:
    from usseg.methods.datus2.stages import run_segments
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="datus2_segments", params=args.params, experiment=args.experiment):
        log_input(Path(args.features), "features")
        stats = run_segments(Path(args.features), Path(args.out), args.config)
        log_output(Path(args.out), "segments")
        log_metrics(stats)
    log.info("datus2 segments: %s", stats)


def _segment_features(args: argparse.Namespace) -> None:
    import torch

    from usseg.methods.datus2.stages import run_segment_features
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    if args.threads:
        torch.set_num_threads(args.threads)
    with job_run(job="datus2_segment_features", params=args.params, experiment=args.experiment):
        log_input(Path(args.segments), "segments")
        log_input(Path(args.weights), f"weights/{args.backbone}")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        stats = run_segment_features(
            Path(args.segments), Path(args.dataset_dir), args.split, args.backbone, Path(args.weights),
            Path(args.out), args.config,
        )  # fmt: skip
        log_output(Path(args.out), "segment_features")
        log_metrics(stats)
    log.info("datus2 segment features: %s", stats)


def _pseudolabels(args: argparse.Namespace) -> None:
    from usseg.methods.datus2.stages import run_pseudolabels
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="datus2_pseudolabels", params=args.params, experiment=args.experiment):
        log_input(Path(args.segment_features), "segment_features")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        stats = run_pseudolabels(
            Path(args.segment_features), Path(args.dataset_dir), Path(args.out), args.config
        )
        log_output(Path(args.out), "pseudolabels")
        log_metrics(stats)
    log.info("datus2 pseudo-labels: %s", stats)


def _masks(args: argparse.Namespace) -> None:
    from usseg.methods.datus2.stages import run_masks, run_pictures
    from usseg.tracking import job_run, log_figure, log_input, log_metrics, log_output

    with job_run(job="datus2_masks", params=args.params, experiment=args.experiment):
        log_input(Path(args.segments), "segments")
        log_input(Path(args.pseudolabels), "pseudolabels")
        stats = run_masks(Path(args.segments), Path(args.pseudolabels), Path(args.out))
        log_output(Path(args.out), "patch_scores")
        log_metrics(stats)
        folder = Path(args.pictures_dir)
        if folder.exists():
            shutil.rmtree(folder)
        for png in run_pictures(Path(args.segments), Path(args.out), Path(args.dataset_dir), args.split,
                                folder, args.pictures):  # fmt: skip
            log_figure(png, "pictures/datus2")
    log.info("datus2 masks: %s", stats)


def _benchmark(args: argparse.Namespace) -> None:
    from usseg.methods.datus2.benchmark import write_benchmark
    from usseg.tracking import job_run, log_figure

    with job_run(job="datus2_benchmark", params={"metrics": list(args.metrics)}):
        rows = write_benchmark([Path(p) for p in args.metrics], Path(args.out_md), Path(args.out_csv),
                               Path(args.out_png))  # fmt: skip
        log_figure(args.out_md, "benchmark")
        log_figure(args.out_png, "benchmark")
    print(f"datus2 benchmark: {len(rows)} rows -> {args.out_md}, {args.out_csv}, {args.out_png}")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args
    from usseg.methods.datus2.params import CropParams, PseudolabelParams, SegmentParams

    p = sub.add_parser("datus2-segments", help="DatUS²: Louvain segments of the patch-key graphs")
    p.add_argument(
        "--features", required=True, help="feature store results/features/{dataset}/{backbone}/{key}.zarr"
    )
    p.add_argument("--out", required=True, help="segments.zarr")
    add_job_args(p, "datus2", typed=SegmentParams)
    p.set_defaults(func=_segments)

    p = sub.add_parser("datus2-segment-features", help="DatUS²: CLS of each valid segment's masked crop")
    p.add_argument("--segments", required=True, help="segments store from `usseg datus2-segments` (.zarr)")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder, e.g. data/prepared/demo")
    p.add_argument("--split", required=True, help="the split to process, e.g. val")
    p.add_argument("--backbone", required=True, help="backbone name, e.g. dinov2_vits14")
    p.add_argument("--weights", required=True, help="data/weights/{backbone}.safetensors")
    p.add_argument("--out", required=True, help="segment_features.zarr")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_job_args(p, "datus2", typed=CropParams)
    p.set_defaults(func=_segment_features)

    p = sub.add_parser("datus2-pseudolabels", help="DatUS²: dataset-level k-means of the segment features")
    p.add_argument("--segment-features", required=True, help="store of `usseg datus2-segment-features`")
    p.add_argument("--dataset-dir", required=True, help="for K = number of classes when params k is null")
    p.add_argument("--out", required=True, help="pseudolabels.zarr")
    add_job_args(p, "datus2", typed=PseudolabelParams)
    p.set_defaults(func=_pseudolabels)

    p = sub.add_parser("datus2-masks", help="DatUS²: dense patch-level pseudo-masks (+ pictures)")
    p.add_argument("--segments", required=True, help="segments store from `usseg datus2-segments` (.zarr)")
    p.add_argument("--pseudolabels", required=True, help="store from `usseg datus2-pseudolabels` (.zarr)")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder, e.g. data/prepared/demo")
    p.add_argument("--split", required=True, help="the split to process, e.g. val")
    p.add_argument("--out", required=True, help="patch_scores.zarr (hard labels, 255 = unlabelled)")
    p.add_argument("--pictures-dir", required=True, help="folder of per-image panels (PNG)")
    p.add_argument("--pictures", type=int, default=4, help="images drawn as panels")
    add_job_args(p, "datus2")
    p.set_defaults(func=_masks)

    p = sub.add_parser("datus2-benchmark", help="DatUS²: backbone benchmark table and plot")
    p.add_argument("metrics", nargs="+", help="report folders results/datus2/*/eval (or their metrics.json)")
    p.add_argument("--out-md", required=True, help="benchmark table (Markdown)")
    p.add_argument("--out-csv", required=True, help="benchmark table (CSV)")
    p.add_argument("--out-png", required=True, help="benchmark plot (PNG)")
    p.set_defaults(func=_benchmark)
