"""`usseg features`: cache ViT features of a prepared split into Zarr."""

from __future__ import annotations

import argparse
from pathlib import Path


def _features(args: argparse.Namespace) -> None:
    import torch

    from usseg.features.extract import extract_features
    from usseg.tracking import job_run, log_input, log_output

    if args.threads:
        torch.set_num_threads(args.threads)
    name = f"features/{Path(args.dataset_dir).name}/{args.backbone}/{Path(args.out).stem}"
    with job_run(job=name, params=args.params, experiment=args.experiment):
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        log_input(Path(args.weights), f"weights/{args.backbone}")
        out = extract_features(
            Path(args.dataset_dir), args.backbone, Path(args.weights), Path(args.out), args.config
        )
        log_output(out, f"features/{Path(args.dataset_dir).name}/{args.backbone}")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.features.params import FeatureParams
    from usseg.job_args import add_job_args

    p = sub.add_parser("features", help="cache ViT features of a prepared split to Zarr")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset, e.g. data/prepared/demo")
    p.add_argument("--backbone", required=True, help="backbone name, e.g. dinov2_vits14")
    p.add_argument("--weights", required=True, help="timm state dict from `usseg weights`")
    p.add_argument("--out", required=True, help="results/features/{dataset}/{backbone}/{key}.zarr")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    add_job_args(p, "features", typed=FeatureParams)
    p.set_defaults(func=_features)
