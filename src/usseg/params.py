"""params.yaml: schema validation, registry checks, and per-experiment resolution.

The schema is assembled from ``workflow/schemas/params.schema.yaml`` and one file per
group in ``workflow/schemas/groups/``, so each stage owns the schema of its parameters.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from usseg.errors import UssegError

SCHEMA_DIR = Path("workflow/schemas")
METHODS = ("kmeans", "multilevel", "datus2", "context_aware")
# Groups every experiment's jobs may read; the method's own group is added per experiment.
SHARED_GROUPS = ("features", "refine", "evaluate", "tracking")


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UssegError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise UssegError(f"{path}: expected a mapping at the top level")
    return data


def load_schema(schema_dir: Path = SCHEMA_DIR) -> dict[str, Any]:
    schema = load_yaml(schema_dir / "params.schema.yaml")
    for group_file in sorted((schema_dir / "groups").glob("*.schema.yaml")):
        group = group_file.name.removesuffix(".schema.yaml")
        # Its own $id makes the group a schema resource: its "#/$defs/..." refs stay local.
        schema["properties"][group] = {"$id": f"urn:usseg:params:{group}", **load_yaml(group_file)}
    return schema


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def preset_experiments(preset: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A preset's experiments as a list: each entry of ``experiments`` (keyed by name) over ``defaults``."""
    defaults = preset.get("defaults", {})
    return [{"name": name, **deep_merge(defaults, spec)} for name, spec in preset["experiments"].items()]


def active_preset(params: Mapping[str, Any]) -> str | None:
    """The preset that supplies the experiments: ``preset`` (``--config preset=NAME``), else
    ``experiments: NAME``; None when ``experiments`` lists them inline."""
    name = params.get("preset", params.get("experiments"))
    return name if isinstance(name, str) else None


def select_preset(params: dict[str, Any]) -> dict[str, Any]:
    """``experiments`` as the list of the active preset's experiments (a name keeps params.yaml a
    plain tree that DVC's rewrite of it preserves, unlike a YAML alias)."""
    name = active_preset(params)
    if name is None:
        return params
    presets = params.get("presets") or {}
    if name not in presets:
        key = "preset" if "preset" in params else "experiments"
        raise UssegError(f"params {key}: unknown preset {name!r} (params.yaml presets: {sorted(presets)})")
    try:
        return {**params, "experiments": preset_experiments(presets[name])}
    except (KeyError, TypeError, AttributeError) as exc:
        raise UssegError(
            f"params presets.{name}: expected {{defaults, experiments: {{name: experiment}}}} ({exc})"
        ) from exc


def _where(error: Any) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _hint(error: Any) -> str:
    """The failing key's schema description, which says what to write instead."""
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    return f" ({description})" if description else ""


def validate(params: dict[str, Any], schema_dir: Path = SCHEMA_DIR) -> None:
    """Schema, then the active experiments' names: every message names the offending key or value."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(load_schema(schema_dir))
    errors = sorted(validator.iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"params {_where(e)}: {e.message}{_hint(e)}" for e in errors[:10]]
        raise UssegError("params.yaml is invalid:\n  " + "\n  ".join(lines))
    _check_names(select_preset(params))


def _check_names(params: dict[str, Any]) -> None:
    from usseg.backbones.registry import BACKBONES
    from usseg.datasets.registry import ADAPTERS

    datasets = params["data"]["datasets"]
    for name, cfg in datasets.items():
        if cfg.get("adapter", name) not in ADAPTERS:
            raise UssegError(
                f"params data.datasets.{name}.adapter: unknown adapter {cfg.get('adapter', name)!r} "
                f"(known: {sorted(ADAPTERS)})"
            )
    for name in params.get("backbones", {}):
        if name not in BACKBONES:
            raise UssegError(f"params backbones.{name}: unknown backbone (known: {sorted(BACKBONES)})")
    seen: set[str] = set()
    for i, exp in enumerate(params["experiments"]):
        where = f"params experiments[{i}] ({exp['name']})"
        if exp["name"] in seen:
            raise UssegError(f"{where}: experiment name {exp['name']!r} is used twice")
        seen.add(exp["name"])
        if exp["method"] not in METHODS:
            raise UssegError(f"{where}: unknown method {exp['method']!r} (known: {list(METHODS)})")
        if exp["dataset"] not in datasets:
            raise UssegError(
                f"{where}: unknown dataset {exp['dataset']!r} (defined in data.datasets: {sorted(datasets)})"
            )
        if exp["backbone"] not in BACKBONES:
            raise UssegError(f"{where}: unknown backbone {exp['backbone']!r} (known: {sorted(BACKBONES)})")


def experiment_params(params: Mapping[str, Any], exp: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter groups one experiment's jobs see, with its overrides merged in."""
    groups = {g: params.get(g, {}) for g in (*SHARED_GROUPS, exp["method"])}
    groups["dataset"] = params["data"]["datasets"][exp["dataset"]]
    groups["backbone"] = params.get("backbones", {}).get(exp["backbone"], {"weights": None})
    return deep_merge(groups, exp.get("overrides", {}))


def params_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def resolve_experiments(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Experiment name -> {name, method, dataset, backbone, params, params_hash}."""
    resolved = {}
    for exp in params["experiments"]:
        merged = experiment_params(params, exp)
        resolved[exp["name"]] = {
            "name": exp["name"],
            "method": exp["method"],
            "dataset": exp["dataset"],
            "backbone": exp["backbone"],
            "params": merged,
            "params_hash": params_hash(merged),
        }
    return resolved


def _validate_cmd(args: argparse.Namespace) -> None:
    params = select_preset(load_yaml(args.file))
    if args.preset:
        params = select_preset({**params, "preset": args.preset})
    validate(params, Path(args.schema_dir))
    for name, exp in resolve_experiments(params).items():
        print(f"{name}: {exp['method']} on {exp['dataset']} with {exp['backbone']} ({exp['params_hash']})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate params.yaml and list the experiments")
    p.add_argument("--file", default="params.yaml")
    p.add_argument("--preset", default=None)
    p.add_argument("--schema-dir", default=str(SCHEMA_DIR))
    p.set_defaults(func=_validate_cmd)
