"""`usseg checkpoint`: one official release file, fetched and verified into data/checkpoints/.

``--params`` is the entry of params.yaml's ``checkpoints`` group
(:class:`~usseg.backbones.params.CheckpointParams`, a dataset archive's fields): ``url``
(+ ``mirror``) to download, or ``path`` to a local copy used instead; either way the file
must match ``checksum`` before it is used. Downloads grow under
``data/checkpoints/.downloads/`` and resume after an interruption; the output appears only
once verified. Backbones (``backbones.<name>.weights``) and context_aware's ResNet init
(``context_aware.checkpoint``) name the output path, so the DAG fetches what they load.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from usseg.backbones.params import CheckpointParams
from usseg.datasets.download import fetch, file_source
from usseg.datasets.params import FileSpec
from usseg.errors import UssegError

FOLDER = Path("data/checkpoints")


def checkpoint_path(name: str) -> str:
    """Where the DAG puts the ``checkpoints`` entry ``name``."""
    return (FOLDER / f"{name}.pth").as_posix()


def fetched_name(path: str | Path | None, params: dict[str, Any]) -> str | None:
    """The ``checkpoints`` entry whose output is ``path`` (None: a file the user provides)."""
    if not path:
        return None
    names = params.get("checkpoints") or {}
    return next((n for n in names if Path(checkpoint_path(n)) == Path(path)), None)


def log_context(path: str | Path) -> str:
    """How a job logs a checkpoint it reads: ``input`` when the DAG fetched it (trace follows
    it to the fetch job), else ``external`` (the user's file: trace checks its bytes only)."""
    return "input" if Path(path).parent == FOLDER else "external"


def fetch_checkpoint(name: str, out: Path, spec: FileSpec) -> Path:
    """Fetch, verify and move ``checkpoints.<name>`` to ``out``."""
    if Path(checkpoint_path(name)).name != out.name:
        raise UssegError(f"checkpoints.{name}: the output must be named {name}.pth, not {out.name}")
    src = file_source(f"checkpoints.{name}", name, spec)
    got = fetch(src, out.parent / ".downloads")
    os.replace(got, out)
    return out


def _checkpoint(args: argparse.Namespace) -> None:
    from usseg.tracking import job_run, log_output

    out = Path(args.out)
    with job_run(job=f"checkpoint/{args.name}", params=args.params, experiment=args.experiment):
        fetch_checkpoint(args.name, out, args.config)
        log_output(out, f"checkpoint/{args.name}")
    print(f"checkpoint {args.name}: {out} ({args.config.checksum})")


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args

    p = sub.add_parser("checkpoint", help="fetch and verify an official checkpoint file")
    p.add_argument("--name", required=True, help="entry of params.yaml's checkpoints group")
    p.add_argument("--out", required=True, help="data/checkpoints/{name}.pth")
    add_job_args(p, "checkpoints.{name}", typed=CheckpointParams)
    p.set_defaults(func=_checkpoint)
