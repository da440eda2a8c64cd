"""`usseg multilevel-level`, `multilevel-consistency`, `multilevel-label`: the branch's jobs.

Each rule passes only the parameters its job reads (see workflow/rules/multilevel.smk),
so changing, say, the labelling parameters re-runs the labelling alone.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from usseg.errors import UssegError
from usseg.methods.multilevel.consistency import LEVELS

log = logging.getLogger(__name__)


def _level(args: argparse.Namespace) -> None:
    from usseg.methods.multilevel.stages import run_level
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job=f"multilevel_{args.level}", params=args.params, experiment=args.experiment):
        log_input(Path(args.features), "features")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        stats = run_level(
            args.level, Path(args.features), Path(args.dataset_dir), Path(args.out), args.config
        )
        log_output(Path(args.out), f"level_{args.level}")  # its shared output's name
        log_metrics(stats)
        log.info("%s level: %s", args.level, stats)


def _consistency(args: argparse.Namespace) -> None:
    from usseg.methods.multilevel.stages import run_consistency
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    paths = level_paths(args, LEVELS)
    with job_run(job="multilevel_consistency", params=args.params, experiment=args.experiment):
        for name, path in paths.items():
            log_input(path, f"level_{name}")
        stats = run_consistency(paths, Path(args.out), Path(args.mask_out), args.config.consistency)
        log_output(Path(args.out), "patch_scores")
        log_output(Path(args.mask_out), "consistent")
        log_metrics(stats)
        log.info("consistency: %s", stats)


def level_paths(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, Path]:
    """The mask stores named on the command line (``--dataset-level`` ...)."""
    return {name: Path(getattr(args, f"{name}_level")) for name in names}


def add_level_args(p: argparse.ArgumentParser, names: tuple[str, ...]) -> None:
    for name in names:
        p.add_argument(f"--{name}-level", required=True, help=f"the {name} level's mask store (.zarr)")


def _label(args: argparse.Namespace) -> None:
    from usseg.artifacts.features import read_attrs
    from usseg.methods.multilevel.stages import CropEmbedder, run_label
    from usseg.tracking import job_run, log_figure, log_input, log_metrics, log_output

    cfg = args.config
    features = Path(args.features)

    def embedder() -> CropEmbedder:
        if not args.weights:
            raise UssegError("multilevel.label.embedding 'crop' re-forwards the ViT: pass --weights")
        size = tuple(int(s) for s in read_attrs(features)["image_size"])
        return CropEmbedder(args.backbone, Path(args.weights), size, cfg.label)

    with job_run(job="multilevel_label", params=args.params, experiment=args.experiment):
        log_input(Path(args.refined), "refined")
        log_input(features, "features")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        if args.weights:
            log_input(Path(args.weights), f"weights/{args.backbone}")
        stats, fg_iou, panels = run_label(
            refined=Path(args.refined),
            features_path=features,
            dataset_dir=Path(args.dataset_dir),
            split=args.split,
            level_paths=level_paths(args, (*LEVELS, "consistent")),
            out=Path(args.out),
            fg_iou_path=Path(args.fg_iou),
            panels_dir=Path(args.panels),
            pictures=args.pictures,
            cfg=cfg,
            embedder=embedder,
        )
        log_output(Path(args.out), "labels")
        log_output(Path(args.fg_iou), "fg_iou")
        log_metrics({**stats, **{f"fg_iou.{k}": v for k, v in fg_iou["iou"].items() if v is not None}})
        for path in panels:
            log_figure(path, "pictures/multilevel")
        summary = ", ".join(f"{k} {100 * v:.1f}" for k, v in fg_iou["iou"].items() if v is not None)
        print(f"foreground IoU (crf {fg_iou['crf']}): {summary or 'no ground truth'}")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args
    from usseg.methods.multilevel.params import LEVEL_PARAMS, ConsistencyParams, LabelParams

    p = sub.add_parser("multilevel-level", help="multilevel: one level's binary patch mask")
    p.add_argument("--level", required=True, choices=LEVELS, help="the level to compute")
    p.add_argument("--features", required=True, help="feature store from `usseg features` (.zarr)")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder, e.g. data/prepared/demo")
    p.add_argument("--out", required=True, help="level mask store (.zarr)")
    add_job_args(p, "multilevel", typed=lambda args: LEVEL_PARAMS[args.level])
    p.set_defaults(func=_level)

    p = sub.add_parser("multilevel-consistency", help="multilevel: align and combine the levels")
    add_level_args(p, LEVELS)
    p.add_argument("--out", required=True, help="soft foreground scores (patch_scores.zarr)")
    p.add_argument("--mask-out", required=True, help="the consistent binary mask (.zarr)")
    add_job_args(p, "multilevel", typed=ConsistencyParams)
    p.set_defaults(func=_consistency)

    p = sub.add_parser("multilevel-label", help="multilevel: class ids for the refined foreground regions")
    p.add_argument("--refined", required=True, help="refined 2-label maps (0 background, 1 foreground)")
    p.add_argument("--features", required=True, help="feature store from `usseg features` (.zarr)")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder, e.g. data/prepared/demo")
    p.add_argument("--split", required=True, help="the split to process, e.g. val")
    add_level_args(p, (*LEVELS, "consistent"))  # for the foreground IoU of every mask
    p.add_argument("--backbone", required=True, help="backbone name, e.g. dinov2_vits14")
    p.add_argument(
        "--weights", default=None, help="backbone weights (the crop embedding re-forwards the ViT)"
    )
    p.add_argument("--out", required=True, help="label maps folder")
    p.add_argument("--fg-iou", required=True, help="foreground IoU of every mask (JSON)")
    p.add_argument("--panels", required=True, help="folder of per-image panels (PNG)")
    p.add_argument("--pictures", type=int, default=4, help="images drawn as panels")
    add_job_args(p, "multilevel", typed=LabelParams)
    p.set_defaults(func=_label)
