"""`usseg <stage>`: one subcommand per DAG stage, so every stage runs without Snakemake."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from usseg.errors import UssegError

# Subcommand -> module exposing ``register(subparsers)``, which adds it with ``func`` set.
# Only the module of the command being run is imported (a stage's CLI starts fast).
COMMANDS = {
    "validate": "usseg.params",
    "dvc-yaml": "usseg.dvc_stages",
    "weights": "usseg.backbones.cli",
    "download": "usseg.datasets.cli",
    "prepare": "usseg.datasets.cli",
    "features": "usseg.features.cli",
    "kmeans": "usseg.methods.kmeans",
    "refine": "usseg.refine.cli",
    "evaluate": "usseg.evaluation.cli",
    "summary": "usseg.evaluation.cli",
    "trace": "usseg.tracking.trace",
    "compare": "usseg.evaluation.compare",
    "grid": "usseg.evaluation.cli",
    "datus2-segments": "usseg.methods.datus2.cli",
    "datus2-segment-features": "usseg.methods.datus2.cli",
    "datus2-pseudolabels": "usseg.methods.datus2.cli",
    "datus2-masks": "usseg.methods.datus2.cli",
    "datus2-benchmark": "usseg.methods.datus2.cli",
    "multilevel-level": "usseg.methods.multilevel.cli",
    "multilevel-consistency": "usseg.methods.multilevel.cli",
    "multilevel-label": "usseg.methods.multilevel.cli",
    "context-aware-train": "usseg.methods.context_aware.cli",
    "context-aware-predict": "usseg.methods.context_aware.cli",
}


def params_arg(text: str) -> dict[str, Any]:
    """Parse a JSON object given inline or as the path of a JSON file."""
    if not text.lstrip().startswith("{"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {text}: {exc}") from exc
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--params must be a JSON object")
    return value


def add_job_args(parser: argparse.ArgumentParser) -> None:
    """Arguments every tracked job takes: its parameters and its MLflow experiment."""
    parser.add_argument("--params", type=params_arg, default={}, help="stage parameters as JSON")
    parser.add_argument(
        "--experiment",
        type=params_arg,
        default=None,
        help="experiment (name, method, dataset, backbone, params_hash) as JSON or a JSON file:"
        " the job's parent MLflow run",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module registered, or every module when None."""
    parser = argparse.ArgumentParser(prog="usseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # faiss reports each optional CPU build it could not load (AVX2/AVX512) at INFO level.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    try:
        args.func(args)
    except UssegError as exc:
        print(f"usseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
