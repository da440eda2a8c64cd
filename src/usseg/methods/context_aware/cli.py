"""`usseg context-aware-train` and `usseg context-aware-predict`: the branch's two stages."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _weights(args: argparse.Namespace) -> Path | None:
    return Path(args.weights) if args.weights else None


def _train(args: argparse.Namespace) -> None:
    from usseg.backbones.fetch import log_context
    from usseg.methods.context_aware.train import train
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    with job_run(job="context_aware_train", params=args.params, experiment=args.experiment):
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        if args.config.checkpoint:
            init = Path(args.config.checkpoint)
            log_input(init, "init_checkpoint", context=log_context(init))
        if args.weights:
            log_input(Path(args.weights), f"weights/{args.backbone}")
        out = train(
            Path(args.dataset_dir),
            args.split,
            Path(args.out),
            args.config,
            backbone=args.backbone,
            weights=_weights(args),
            log_metrics=lambda metrics, step: log_metrics(metrics, step=step),
        )
        log_output(out, "model")
        epochs = json.loads((out / "history.json").read_text())["epochs"]
        seconds = [e["seconds"] for e in epochs]
        log_metrics({"mean_epoch_seconds": sum(seconds) / len(seconds)})
        log.info(
            "trained %d epochs into %s (%.1f s per epoch)", len(seconds), out, sum(seconds) / len(seconds)
        )


def _predict(args: argparse.Namespace) -> None:
    from usseg.methods.context_aware.predict import predict
    from usseg.tracking import job_run, log_input, log_output

    with job_run(job="context_aware_predict", params=args.params, experiment=args.experiment):
        log_input(Path(args.model), "model")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        if args.weights:
            log_input(Path(args.weights), f"weights/{args.backbone}")
        predict(
            Path(args.model), Path(args.dataset_dir), args.split, Path(args.out), args.config, _weights(args)
        )
        log_output(Path(args.out), "patch_scores")


def _common(p: argparse.ArgumentParser, typed: type) -> None:
    from usseg.job_args import add_job_args

    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder")
    p.add_argument("--split", required=True, help="the evaluation split")
    p.add_argument("--out", required=True, help="training folder (train) or patch_scores.zarr (predict)")
    p.add_argument("--backbone", default=None, help="arch=vit: the frozen ViT backbone's name")
    p.add_argument("--weights", default=None, help="arch=vit: the backbone's weights file")
    add_job_args(p, "context_aware", typed=typed)


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.methods.context_aware.params import PredictParams, TrainParams

    p = sub.add_parser("context-aware-train", help="context_aware: siamese PSG + CAE training")
    _common(p, TrainParams)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "context-aware-predict", help="context_aware: cluster assignment of the evaluation split"
    )
    p.add_argument("--model", required=True, help="training folder from context-aware-train")
    _common(p, PredictParams)
    p.set_defaults(func=_predict)
