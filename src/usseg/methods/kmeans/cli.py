"""Baseline branch `kmeans`: k-means over the cached patch features of the whole split.

The "DINO features + k-means" baseline USS papers report: K = number of classes
(unless set), cosine k-means (faiss) on a subsample, every patch then assigned.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from usseg.methods.kmeans.params import KMeansParams

log = logging.getLogger(__name__)


def run_kmeans(features_path: Path, dataset_dir: Path, out: Path, params: KMeansParams) -> dict[str, float]:
    """Cluster, write hard patch labels to ``out``; return summary statistics."""
    # imported here, not at module level: `usseg --help` must not load faiss and xarray
    import numpy as np
    from tqdm import tqdm

    from usseg.artifacts.features import open_features
    from usseg.artifacts.predictions import write_predictions
    from usseg.artifacts.prepared import PreparedDataset
    from usseg.methods.clustering import assign, fit_kmeans, fit_sample, image_patches

    features = open_features(features_path)
    k = params.k or len(PreparedDataset(dataset_dir).classes)
    sample = fit_sample(features, params.max_points, params.seed, params.normalize)
    km = fit_kmeans(sample, k, params.niter, params.nredo, params.seed, params.normalize)
    gh, gw = features.sizes["y"], features.sizes["x"]
    labels = np.empty((features.sizes["image"], gh, gw), np.uint8)
    for i, x in enumerate(tqdm(image_patches(features, params.normalize), total=len(labels), desc="assign")):
        labels[i] = assign(km, x).reshape(gh, gw)
    write_predictions(
        out,
        features["image"].values,
        features["height"].values,
        features["width"].values,
        labels=labels,
        num_labels=k,
        attrs={"method": "kmeans", "features": str(features_path)},
    )
    sizes = np.bincount(labels.ravel(), minlength=k) / labels.size
    return {"k": float(k), "objective": float(km.obj[-1]), "fit_points": float(len(sample)),
            "smallest_cluster_fraction": float(sizes.min())}


def _kmeans(args: argparse.Namespace) -> None:
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="kmeans", params=args.params, experiment=args.experiment):
        log_input(Path(args.features), "features")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        stats = run_kmeans(Path(args.features), Path(args.dataset_dir), Path(args.out), args.config)
        log_output(Path(args.out), "patch_scores")
        log_metrics(stats)
        log.info("kmeans: %s", stats)


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args

    p = sub.add_parser("kmeans", help="baseline: k-means over cached patch features")
    p.add_argument("--features", required=True, help="feature store from `usseg features` (.zarr)")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder, e.g. data/prepared/demo")
    p.add_argument("--out", required=True, help="patch-level predictions (patch_scores.zarr)")
    add_job_args(p, "kmeans", typed=KMeansParams)
    p.set_defaults(func=_kmeans)
