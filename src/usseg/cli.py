"""`usseg <stage>`: one subcommand per DAG stage, so every stage runs without Snakemake."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any

from usseg.errors import UssegError

# Each module exposes ``register(subparsers)`` adding its subcommand(s); the parser sets
# ``func`` to a callable taking the parsed args.
STAGE_MODULES = [
    "usseg.params",
    "usseg.backbones.cli",
    "usseg.datasets.cli",
    "usseg.features.cli",
    "usseg.methods.kmeans",
    "usseg.refine.cli",
    "usseg.evaluation.cli",
]


def params_arg(text: str) -> dict[str, Any]:
    """Parse the ``--params`` JSON a rule passes in."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--params is not valid JSON: {exc}") from exc
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
        help="experiment as JSON (name, method, dataset, backbone, params_hash): the parent MLflow run",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="usseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in STAGE_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        args.func(args)
    except UssegError as exc:
        print(f"usseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
