"""The arguments every tracked job takes (``--params``, ``--params-file``, ``--experiment``) and
their resolution from the params file, for the stage CLIs to register below ``usseg.cli``."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from usseg.errors import UssegError

T = TypeVar("T")
# dataclass field metadata: the field is not of the job's params group (the plan adds it)
OUTSIDE_GROUP = "outside_group"


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


def experiment_arg(text: str) -> dict[str, Any] | str:
    """An experiment record (JSON object or file, as Snakemake passes it) or a bare name,
    resolved from the params file once every argument is parsed."""
    if text.lstrip().startswith("{") or Path(text).is_file():
        return params_arg(text)
    return text


def field_names(cls: type) -> tuple[str, ...]:
    """The keys a typed step-parameter dataclass holds (a step spec's ``keys``)."""
    return tuple(f.name for f in dataclasses.fields(cls))


def typed_params(cls: type[T], params: dict[str, Any], group: str | Sequence[str]) -> T:
    """``cls`` from the job's ``--params``: its own keys of them (a whole params group when run
    by hand), all checked against the group's schema, the one home of their rules; an error
    names the key (``usseg.cli`` prefixes the command). A field marked ``OUTSIDE_GROUP`` comes
    from another part of params.yaml, checked there, and may be left to its default."""
    from usseg.params import check_group

    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    missing = [f.name for f in fields if f.name not in params and not _has_default(f)]
    if missing:
        raise UssegError(f"--params: missing {missing} (it reads {list(field_names(cls))})")
    outside = {f.name for f in fields if OUTSIDE_GROUP in f.metadata}
    # every key given, not only the step's: a misspelt one is an error, not a default silently used
    check_group(group, {k: v for k, v in params.items() if k not in outside})
    return build_typed(cls, {f.name: params[f.name] for f in fields if f.name in params})


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def build_typed(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from values already checked (by the schema, or as a finished step wrote them):
    nested groups become their dataclasses, lists tuples; absent fields keep their defaults."""
    hints = get_type_hints(cls)
    kwargs = {}
    for name in field_names(cls):
        if name not in values:
            continue
        kwargs[name] = _coerce(hints[name], values[name])
    return cls(**kwargs)


def _coerce(hint: Any, value: Any) -> Any:
    """A nested group as its dataclass, a list as the tuple its field holds, a mapping's values
    as theirs (a dataset's ``archives``), ``X | None`` too."""
    if value is None:
        return None
    for option in get_args(hint) if isinstance(hint, UnionType) else (hint,):
        if dataclasses.is_dataclass(option) and isinstance(value, dict):
            return build_typed(option, value)
        if get_origin(option) is tuple and isinstance(value, list | tuple):
            return tuple(value)
        if get_origin(option) is dict and isinstance(value, dict):
            item = get_args(option)[1]
            return {k: _coerce(item, v) for k, v in value.items()}
    return value


def as_given(value: Any, given: Any) -> Any:
    """``value`` (a typed job's ``asdict``) with only the keys ``given`` holds, at every depth:
    what the run records is what it read (an optional key left out stays out, as in params.yaml)."""
    if isinstance(value, dict) and isinstance(given, dict):
        return {k: as_given(v, given[k]) for k, v in value.items() if k in given}
    return value


def add_job_args(
    parser: argparse.ArgumentParser,
    group: str,
    missing: dict[str, Any] | None = None,
    typed: type | Callable[[argparse.Namespace], type] | None = None,
) -> None:
    """Arguments every tracked job takes: its parameters and its MLflow experiment.

    Without ``--params`` the job reads ``group`` of the params file (a dotted path into
    params.yaml, formatted with the parsed arguments, e.g. ``backbones.{backbone}``), or of
    the experiment's merged groups when ``--experiment`` names one; ``missing`` stands in
    for a group the file does not define (as the workflow does). With ``typed`` (a dataclass)
    the job gets ``args.config``, parsed once here, and records only the keys it holds; a
    command whose arguments pick its step (``multilevel-level --level``) passes a function of
    the parsed arguments returning the dataclass.
    """
    parser.add_argument(
        "--params",
        type=params_arg,
        default=None,
        help=f"stage parameters as JSON (inline or a file); default: `{group}` of --params-file,"
        " merged for --experiment when given",
    )
    parser.add_argument(
        "--params-file",
        default="params.yaml",
        help="params.yaml to read the stage's defaults and experiments from when --params is not given",
    )
    parser.add_argument(
        "--experiment",
        type=experiment_arg,
        default=None,
        help="the job's experiment (its MLflow parent run): a name in the params file's active preset, or"
        " its record (name, method, dataset, backbone, params_hash) as JSON or a JSON file",
    )
    parser.set_defaults(params_group=group, params_missing=missing, params_type=typed)


def resolve_job_args(args: argparse.Namespace) -> None:
    """Fill ``args.experiment`` (a bare name) and ``args.params`` (not given) from the params
    file; the workflow passes both in full, so its jobs never read params.yaml here."""
    tree: dict[str, Any] | None = None
    if isinstance(args.experiment, str):
        tree = read_params_file(args.params_file)
        args.experiment = named_experiment(tree, args.experiment, args.params_file)
    if args.params is None:
        record = (args.experiment or {}).get("params", {})
        if args.params_group in record:  # the experiment's merged group
            args.params = dict(record[args.params_group])
        else:
            args.params = stage_params(tree or read_params_file(args.params_file), args)
    if args.params_type is not None:
        group = [key.format(**vars(args)) for key in args.params_group.split(".")]
        cls = args.params_type if isinstance(args.params_type, type) else args.params_type(args)
        args.config = typed_params(cls, args.params, group)
        args.params = as_given(dataclasses.asdict(args.config), args.params)


def read_params_file(path: str) -> dict[str, Any]:
    """params.yaml with its active preset's experiments listed, as the Snakefile reads it."""
    from usseg import params as P

    if not Path(path).is_file():
        raise UssegError(f"--params-file {path} does not exist (pass --params, or run where params.yaml is)")
    return P.select_preset(P.load_params([path]))


def named_experiment(tree: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    """The record the workflow writes to results/.experiments/{name}.json, from the params file."""
    from usseg.params import resolve_experiments

    experiments = resolve_experiments(tree)
    if name not in experiments:
        known = sorted(experiments)
        raise UssegError(f"{source}: experiment {name!r} is not in the active preset (known: {known})")
    record = experiments[name]
    return {**record, "mlflow_experiment": record["params"]["tracking"]["experiment"]}


def stage_params(tree: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The stage's group of the params file (``params_group`` formatted with the arguments);
    a dataset's or backbone's ``features`` block belongs to the features job, not this one."""
    from usseg.params import without_features

    path = args.params_group.format(**vars(args))
    value: Any = tree
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            if args.params_missing is not None:
                return dict(args.params_missing)
            raise UssegError(f"{args.params_file}: no `{path}` for the parameters of `usseg {args.command}`")
        value = value[key]
    if not isinstance(value, dict):
        raise UssegError(f"{args.params_file}: `{path}` is not a group of parameters")
    return without_features(value)
