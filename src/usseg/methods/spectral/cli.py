"""`usseg spectral-segments`, `spectral-clusters`, `spectral-masks`: the branch's own jobs.

Its crop feature per segment is DatUS²'s shared step (`usseg datus2-segment-features`, run by
workflow/rules/spectral.smk on this branch's segments with this branch's parameters).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _segments(args: argparse.Namespace) -> None:
    from usseg.methods.spectral.stages import run_segments
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="spectral_segments", params=args.params, experiment=args.experiment):
        log_input(Path(args.features), "features")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        stats = run_segments(
            Path(args.features), Path(args.dataset_dir), args.split, Path(args.out), args.config
        )
        log_output(Path(args.out), "segments")
        log_metrics(stats)
        log.info("spectral segments: %s", stats)


def _clusters(args: argparse.Namespace) -> None:
    from usseg.methods.spectral.stages import run_clusters
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="spectral_clusters", params=args.params, experiment=args.experiment):
        log_input(Path(args.segment_features), "segment_features")
        stats = run_clusters(Path(args.segment_features), Path(args.dataset_dir), Path(args.out), args.config)
        log_output(Path(args.out), "clusters")
        log_metrics(stats)
        log.info("spectral clusters: %s", stats)


def _masks(args: argparse.Namespace) -> None:
    from usseg.methods.spectral.stages import run_masks
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="spectral_masks", params=args.params, experiment=args.experiment):
        log_input(Path(args.segments), "segments")
        log_input(Path(args.clusters), "clusters")
        stats = run_masks(Path(args.segments), Path(args.clusters), Path(args.out))
        log_output(Path(args.out), "patch_scores")
        log_metrics(stats)
        log.info("spectral masks: %s", stats)


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args
    from usseg.methods.spectral.params import ClusterParams, SegmentParams

    p = sub.add_parser("spectral-segments", help="spectral: Laplacian eigenvectors -> multi-region segments")
    p.add_argument(
        "--features", required=True, help="feature store from `usseg features` (.zarr, keys facet)"
    )
    p.add_argument(
        "--dataset-dir", required=True, help="prepared dataset folder (the colour affinity's images)"
    )
    p.add_argument("--split", required=True, help="the split of the feature store, e.g. val")
    p.add_argument("--out", required=True, help="segments store (.zarr)")
    add_job_args(p, "spectral", typed=SegmentParams)
    p.set_defaults(func=_segments)

    p = sub.add_parser("spectral-clusters", help="spectral: k-means of the segments' crop features")
    p.add_argument("--segment-features", required=True, help="from `usseg datus2-segment-features` (.zarr)")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder (K from its classes)")
    p.add_argument("--out", required=True, help="one cluster per segment (.zarr)")
    add_job_args(p, "spectral", typed=ClusterParams)
    p.set_defaults(func=_clusters)

    p = sub.add_parser("spectral-masks", help="spectral: patch labels from segments and their clusters")
    p.add_argument("--segments", required=True, help="from `usseg spectral-segments` (.zarr)")
    p.add_argument("--clusters", required=True, help="from `usseg spectral-clusters` (.zarr)")
    p.add_argument("--out", required=True, help="patch predictions (patch_scores.zarr)")
    add_job_args(p, "spectral")
    p.set_defaults(func=_masks)
