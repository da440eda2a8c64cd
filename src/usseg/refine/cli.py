"""`usseg refine`: patch-level predictions -> full-resolution label maps (+ dense CRF)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


def shard_arg(text: str) -> tuple[int, int]:
    """``i/n``: this run refines shard i (0-based) of n."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/4") from exc
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return i, n


def _refine(args: argparse.Namespace) -> None:
    from usseg.artifacts.atomic import partial_path
    from usseg.refine.params import settings
    from usseg.refine.stage import refine_split
    from usseg.tracking import job_run, log_input, log_metrics, log_output

    s = settings(args.params)
    with job_run(job="refine", params=args.params, experiment=args.experiment):
        log_input(Path(args.scores), "patch_scores")
        log_input(Path(args.dataset_dir), f"prepared/{Path(args.dataset_dir).name}")
        start = time.perf_counter()
        stats = refine_split(
            Path(args.scores), Path(args.dataset_dir), args.split, Path(args.out), s, args.threads, args.shard
        )
        seconds = time.perf_counter() - start
        if not partial_path(Path(args.out)).exists():  # a shard that did not complete the set wrote no output yet
            log_output(Path(args.out), "refined")
        pixels = max(1, sum(st.pixels for st in stats))
        metrics = {
            "refine.images": len(stats),
            "refine.seconds": seconds,
            "refine.images_per_s": len(stats) / seconds if seconds > 0 else 0.0,
            "refine.changed_pct": 100.0 * sum(st.changed for st in stats) / pixels,
            "refine.unlabelled_pct": 100.0 * sum(st.unlabelled for st in stats) / pixels,
        }
        log_metrics(metrics)
        log.info(
            "refine: %d images in %.1f s (crf %s, impl %s); CRF changed %.2f%% of pixels, %.2f%% unlabelled",
            len(stats), seconds, s.crf, s.impl, metrics["refine.changed_pct"], metrics["refine.unlabelled_pct"],
        )


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args

    p = sub.add_parser("refine", help="upsample patch predictions to image size and refine with a dense CRF")
    p.add_argument("--scores", required=True, help="patch_scores.zarr of a method")
    p.add_argument("--dataset-dir", required=True, help="prepared dataset folder")
    p.add_argument("--split", required=True, help="the split to process, e.g. val")
    p.add_argument("--out", required=True, help="output folder of {id}.png label maps and index.json")
    p.add_argument("--threads", type=int, default=1, help="worker processes (pydensecrf) or torch threads")
    p.add_argument("--shard", type=shard_arg, default=None, help="i/n: refine only shard i of n (see docs/refine.md)")
    add_job_args(p, "refine")
    p.set_defaults(func=_refine)
