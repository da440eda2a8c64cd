"""`usseg <stage>`: one subcommand per DAG stage, so every stage runs without Snakemake."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from usseg.errors import UssegError, disk_full, is_disk_full
from usseg.job_args import resolve_job_args
from usseg.steps import methods

# Subcommand -> module exposing ``register(subparsers)``, which adds it with ``func`` set.
# Only the module of the command being run is imported (a stage's CLI starts fast).
COMMANDS = {
    "validate": "usseg.params",
    "dvc-yaml": "usseg.dvc_stages",
    "checkpoint": "usseg.backbones.fetch",
    "weights": "usseg.backbones.cli",
    "download": "usseg.datasets.cli",
    "prepare": "usseg.datasets.cli",
    "features": "usseg.features.cli",
    "refine": "usseg.refine.cli",
    "evaluate": "usseg.evaluation.cli",
    "summary": "usseg.evaluation.cli",
    "trace": "usseg.tracking.trace",
    "sync-runs": "usseg.tracking.sync",
    "runs-url": "usseg.tracking.sync",
    "compare": "usseg.evaluation.compare",
    "grid": "usseg.evaluation.cli",
    "rehearsal": "usseg.rehearsal.cli",
}
# ... and every method's step and report commands, from its spec (usseg/methods/<name>/spec.py)
COMMANDS.update(
    {**{s.command: s.cli or m.cli for m in methods().values() for s in m.steps},
     **{r.command: m.cli for m in methods().values() for r in m.reports}}
)  # fmt: skip


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s module registered, or every module when None."""
    parser = argparse.ArgumentParser(prog="usseg", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}",
                        help="print the package version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else list(dict.fromkeys(COMMANDS.values()))
    for name in modules:
        importlib.import_module(name).register(sub)
    return parser


def package_version() -> str:
    """The installed distribution's version (the source tree's own when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("usseg")
    except PackageNotFoundError:
        return "unknown (not installed)"


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
        if hasattr(args, "params_group"):
            resolve_job_args(args)
        args.func(args)
    except UssegError as exc:
        print(f"usseg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # a stage that knows its size says so itself (features); this names the output at least
        target = getattr(args, "out", None) or exc.filename or "its output"
        print(f"usseg {args.command}: error: {disk_full(target)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
