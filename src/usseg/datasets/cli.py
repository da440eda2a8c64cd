"""`usseg download` and `usseg prepare`: raw data in, the prepared form out."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from usseg.datasets.registry import adapter
from usseg.errors import UssegError


def _adapter_params(args: argparse.Namespace) -> type:
    """The dataclass of the dataset's adapter (``adapter``, default: the dataset's name)."""
    return adapter(args.params.get("adapter") or args.dataset).PARAMS


def _download(args: argparse.Namespace) -> None:
    from usseg.tracking import job_run, log_output

    module = adapter(args.config.adapter or args.dataset)
    if not module.NEEDS_DOWNLOAD:
        raise UssegError(f"dataset {args.dataset!r} is generated or local; it has nothing to download")
    with job_run(job=f"download/{args.dataset}", params=args.params):
        module.download(Path(args.out), args.config)
        log_output(Path(args.out), f"raw/{args.dataset}")


def _prepare(args: argparse.Namespace) -> None:
    from usseg.tracking import job_run, log_input, log_output

    module = adapter(args.config.adapter or args.dataset)
    raw = Path(args.raw) if args.raw else None
    with job_run(job=f"prepare/{args.dataset}", params=args.params):
        if raw is not None:
            log_input(raw, f"raw/{args.dataset}")
        # the dataset's key names it in meta.json (and so in every message about it)
        module.prepare(raw, Path(args.out), replace(args.config, name=args.dataset))
        log_output(Path(args.out), f"prepared/{args.dataset}")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args

    p = sub.add_parser("download", help="download and verify a dataset's raw archives")
    p.add_argument("--dataset", required=True, help="dataset name (a key of params.yaml data.datasets)")
    p.add_argument("--out", required=True, help="raw folder, e.g. data/raw/voc2012")
    add_job_args(p, "data.datasets.{dataset}", typed=_adapter_params)
    p.set_defaults(func=_download)

    p = sub.add_parser("prepare", help="prepare a dataset into the project's one form")
    p.add_argument("--dataset", required=True, help="dataset name (a key of params.yaml data.datasets)")
    p.add_argument("--raw", default=None, help="raw folder from `usseg download`")
    p.add_argument("--out", required=True, help="prepared folder, e.g. data/prepared/demo")
    add_job_args(p, "data.datasets.{dataset}", typed=_adapter_params)
    p.set_defaults(func=_prepare)
