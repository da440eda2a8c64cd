"""params.yaml: schema validation, registry checks, and per-experiment resolution.

The schema is assembled from ``workflow/schemas/params.schema.yaml`` and one file per
group in ``workflow/schemas/groups/``, so each stage owns the schema of its parameters.
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from usseg.artifacts.digest import params_hash
from usseg.errors import UssegError
from usseg.steps import methods
from usseg.yaml_files import read_yaml

SCHEMA_DIR = Path("workflow/schemas")
# The schemas of the checkout this package is installed from (editable, as README and
# environment.yml install it): what a job checks its own parameters against, from any folder.
CHECKOUT_SCHEMAS = Path(__file__).resolve().parents[2] / SCHEMA_DIR
METHODS = tuple(methods())  # every method package's spec (usseg/methods/<name>/spec.py)
# Groups every experiment's jobs may read; the method's own group is added per experiment.
SHARED_GROUPS = ("features", "refine", "evaluate", "tracking")
# An experiment's setup `inputs` under `tracking.rehearsal`: its numbers are meaningless.
STAND_INS = "stand-ins (rehearsal)"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping, read strictly (duplicate keys and syntax errors name file and line)."""
    path = Path(path)
    data = read_yaml(path)
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


def _describe(error: Any) -> str:
    """The schema error, the failing key's description (it says what to write instead), and
    for a boolean where text is wanted, that YAML 1.1 reads on/off/yes/no as booleans."""
    text = error.message
    description = error.schema.get("description") if isinstance(error.schema, dict) else None
    if description:
        text += f" ({description})"
    if isinstance(error.instance, bool) and error.validator in ("enum", "type") and "YAML" not in text:
        word = "on/yes" if error.instance else "off/no"
        text += f" (YAML 1.1 reads a bare {word} as the boolean {error.instance}: quote the word)"
    return text


# Where parameters come from, in Snakemake's merge order: params.yaml, each --configfile,
# then `--config key=value` given as ("--config", values).
Source = str | Path | tuple[str, Mapping[str, Any]]


def _source_layers(sources: Sequence[Source] | None) -> list[tuple[str, Any]]:
    """(label, content) of each source, lowest precedence first; unreadable files are skipped."""
    layers: list[tuple[str, Any]] = []
    for source in sources or [Path("params.yaml")]:
        if isinstance(source, tuple):
            layers.append(source)
            continue
        try:
            layers.append((str(source), read_yaml(source)))
        except UssegError:
            continue
    return layers or [("params.yaml", {})]


def _defined_depth(data: Any, keys: Sequence[Any]) -> int:
    """How many leading keys of ``keys`` ``data`` defines (list indices included)."""
    for depth, key in enumerate(keys):
        in_mapping = isinstance(data, Mapping) and key in data
        in_list = isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data)
        if in_mapping or in_list:
            data = data[key]
        else:
            return depth
    return len(keys)


def _defines(data: Any, keys: Sequence[Any]) -> bool:
    return _defined_depth(data, keys) == len(keys)


def _experiment_paths(data: Any, name: str, rest: Sequence[Any], preset: str | None) -> list[list[Any]]:
    """Where a file may set key ``rest`` of experiment ``name``: its preset entry, the
    preset's defaults, or its entry in an inline ``experiments`` list."""
    paths: list[list[Any]] = []
    if preset is not None:
        paths += [["presets", preset, "experiments", name, *rest], ["presets", preset, "defaults", *rest]]
    inline = data.get("experiments") if isinstance(data, Mapping) else None
    if isinstance(inline, list):
        paths += [["experiments", i, *rest] for i, e in enumerate(inline)
                  if isinstance(e, Mapping) and e.get("name") == name]  # fmt: skip
    return paths


def source_of(
    layers: Sequence[tuple[str, Any]], keys: Sequence[Any] = (), experiment: str | None = None,
    preset: str | None = None,
) -> str:  # fmt: skip
    """The source (params.yaml, a later ``--configfile``, or ``--config``) that sets ``keys``;
    ``layers`` are the sources as read once by ``_source_layers``.

    With ``experiment``, ``keys`` are relative to that experiment (``[]``: where it is
    defined; ``["overrides", ...]``: one of its overrides). The latest source that sets the
    deepest part of the path wins, as later sources win in Snakemake's config merge.
    """
    best, label = 0, None
    for name, data in layers:
        paths = _experiment_paths(data, experiment, keys, preset) if experiment else [list(keys)]
        depth = max((_defined_depth(data, path) for path in paths), default=0)
        if depth >= best and depth > 0:
            best, label = depth, name
    return label or layers[0][0]


def param_sources(params_file: str | Path, settings: Any) -> list[Source]:
    """Snakemake's parameter sources in merge order, each file read strictly once.

    ``settings`` is Snakemake's ``workflow.config_settings``: its ``configfiles`` (the
    ``--configfile`` list) and ``config`` (``--config key=value``) override params.yaml.
    """
    files = list(dict.fromkeys([str(params_file), *map(str, settings.configfiles)]))
    for path in files:
        load_yaml(path)
    sources: list[Source] = list(files)
    if settings.config:
        sources.append(("--config", dict(settings.config)))
    return sources


def validate(params: dict[str, Any], schema_dir: Path = SCHEMA_DIR, sources: Sequence[Source] | None = None) -> None:
    """Schema, then names, then every experiment's merged parameters.

    Each message names the key path and the source that set the value (``sources``:
    params.yaml, then any ``--configfile``, then ``--config``, in Snakemake's merge order).
    """
    import jsonschema

    schema = load_schema(schema_dir)
    layers = _source_layers(sources)  # each source read once, for the messages' file names
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(params), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"{source_of(layers, _error_path(e))}: params {_where(e)}: {_describe(e)}" for e in errors[:10]]
        where = source_of(layers, _error_path(errors[0]))
        raise UssegError(f"{where} is invalid:\n  " + "\n  ".join(lines))
    preset = active_preset(params)
    params = select_preset(params)
    _check_names(params, layers, preset)
    expand_seeds(params["experiments"])
    own: dict[str, list[str]] = {}  # experiment -> problems of its own entry
    shared: dict[tuple[str, str], list[str]] = {}  # (source, problem) -> experiments it breaks
    for exp in params["experiments"]:
        for path, message in experiment_errors(params, exp, schema):
            key = ".".join(map(str, path))
            if path[0] == "experiments":
                own.setdefault(exp["name"], []).append(f"{key}: {message}")
            else:
                shared.setdefault((source_of(layers, path), f"{key}: {message}"), []).append(exp["name"])
    blocks = [f"{where}: {problem} (breaks experiments {', '.join(names)})"
              for (where, problem), names in shared.items()]  # fmt: skip
    for name, problems in own.items():
        where = source_of(layers, [], experiment=name, preset=preset)
        blocks.append(f"{where}: experiment {name!r} is invalid:\n  " + "\n  ".join(problems[:10]))
    if blocks:
        raise UssegError("\n".join(blocks))


def check_group(
    group: str | Sequence[str], values: Mapping[str, Any], schema_dir: Path = CHECKOUT_SCHEMAS
) -> None:
    """A job's own parameters against its group's schema: the rules live there once, and a job
    given ``--params`` by hand meets them too. ``values`` may hold only the keys a step reads.
    ``group`` is a group (``multilevel``) or the keys to one entry of it (``data``, ``datasets``,
    ``voc2012``): the entry's rules are found below the group's (an entry's name may hold dots)."""
    import jsonschema

    first, *below = group.split(".") if isinstance(group, str) else group
    group = ".".join([first, *below])
    schema = load_yaml(schema_dir / "groups" / f"{first}.schema.yaml")
    for key in below:
        schema = (schema.get("properties") or {}).get(key) or schema.get("additionalProperties")
        if not isinstance(schema, dict):
            raise UssegError(f"params {group}: the {first} schema has no entry {key!r}")
    schema["required"] = [k for k in schema.get("required", []) if k in values]
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(dict(values)),
                    key=lambda e: list(e.absolute_path))  # fmt: skip
    if errors:
        lines = [f"params {group}.{_where(e)}: {_describe(e)}".replace(".<top level>", "") for e in errors[:10]]
        raise UssegError("--params are invalid:\n  " + "\n  ".join(lines))


def _check_names(params: dict[str, Any], layers: Sequence[tuple[str, Any]], preset: str | None = None) -> None:
    """Names that must exist: adapters, backbones, local weights files, experiments' method,
    dataset and backbone; and every experiment's dataset must have ground truth to score."""
    from usseg.backbones.fetch import fetched_name
    from usseg.backbones.registry import BACKBONES
    from usseg.datasets.registry import ADAPTERS

    datasets = params["data"]["datasets"]
    for name, cfg in datasets.items():
        if cfg.get("adapter", name) not in ADAPTERS:
            raise UssegError(
                f"{source_of(layers, ['data', 'datasets', name, 'adapter'])}: params data.datasets.{name}.adapter: "
                f"unknown adapter {cfg.get('adapter', name)!r} (known: {sorted(ADAPTERS)})"
            )
    for name, cfg in (params.get("backbones") or {}).items():
        if name not in BACKBONES:
            raise UssegError(
                f"{source_of(layers, ['backbones', name])}: params backbones.{name}: unknown backbone "
                f"(known: {sorted(BACKBONES)})"
            )
        weights = (cfg or {}).get("weights")
        if weights and not fetched_name(weights, params) and not Path(weights).expanduser().is_file():
            raise UssegError(
                f"{source_of(layers, ['backbones', name, 'weights'])}: params backbones.{name}.weights: "
                f"{weights} is not a file (null: the backbone's pretrained weights from timm; "
                f"data/checkpoints/{{name}}.pth: the DAG fetches checkpoints.{{name}})"
            )
    seen: set[str] = set()
    for i, exp in enumerate(params["experiments"]):
        problem = None
        if exp["name"] in seen:
            problem = f"experiment name {exp['name']!r} is used twice"
        elif exp["method"] not in METHODS:
            problem = f"unknown method {exp['method']!r} (known: {list(METHODS)})"
        elif exp["dataset"] not in datasets:
            problem = f"unknown dataset {exp['dataset']!r} (defined in data.datasets: {sorted(datasets)})"
        elif exp["backbone"] not in BACKBONES:
            problem = f"unknown backbone {exp['backbone']!r} (known: {sorted(BACKBONES)})"
        if problem is not None:  # the file that defines the experiment is looked up only now
            origin = source_of(layers, [], experiment=exp["name"], preset=preset)
            raise UssegError(f"{origin}: params experiments[{i}] ({exp['name']}): {problem}")
        seen.add(exp["name"])
        cfg = datasets[exp["dataset"]]
        if cfg.get("adapter", exp["dataset"]) == "folder" and not cfg.get("masks"):
            raise UssegError(
                f"{source_of(layers, ['data', 'datasets', exp['dataset']])}: params data.datasets."
                f"{exp['dataset']}: a folder dataset without `masks` has no ground truth, so experiment "
                f"{exp['name']!r} could not be evaluated; set `masks` (and `classes`) for it"
            )


def _layers(params: Mapping[str, Any], exp: Mapping[str, Any], group: str) -> list[tuple[list[str], Mapping[str, Any]]]:
    """Where one merged group's values come from, lowest precedence first: (key path, values).

    ``features`` is per experiment: the global group, then the backbone's and the dataset's
    ``features`` blocks, then the experiment's overrides.
    """
    layers = [([group], params.get(group, {}))]
    if group == "features":
        backbone = params.get("backbones", {}).get(exp["backbone"], {})
        dataset = params["data"]["datasets"][exp["dataset"]]
        layers += [
            (["backbones", exp["backbone"], "features"], backbone.get("features", {})),
            (["data", "datasets", exp["dataset"], "features"], dataset.get("features", {})),
        ]
    return [*layers, (["experiments", exp["name"], "overrides", group], exp.get("overrides", {}).get(group, {}))]


def experiment_groups(exp: Mapping[str, Any]) -> tuple[str, ...]:
    """The parameter groups an experiment's jobs read, hence the groups it may override."""
    return (*SHARED_GROUPS, exp["method"])


def experiment_params(params: Mapping[str, Any], exp: Mapping[str, Any]) -> dict[str, Any]:
    """The parameter groups one experiment's jobs see, with its overrides merged in."""
    groups: dict[str, Any] = {}
    for group in experiment_groups(exp):
        merged: dict[str, Any] = {}
        for _, values in _layers(params, exp, group):
            merged = deep_merge(merged, values)
        groups[group] = merged
    groups["dataset"] = without_features(params["data"]["datasets"][exp["dataset"]])
    groups["backbone"] = without_features(params.get("backbones", {}).get(exp["backbone"], {"weights": None}))
    return groups


def without_features(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset's or backbone's own settings: its ``features`` block belongs to the features group."""
    return {k: v for k, v in cfg.items() if k != "features"}


def _error_path(error: Any) -> list[Any]:
    """The key path of a schema error, down to the unexpected key for additionalProperties."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = set(error.schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        path += extra[:1]
    return path


def _origin(layers: list[tuple[list[str], Mapping[str, Any]]], path: list[Any]) -> list[Any]:
    """The full key path of the highest-precedence layer that sets ``path`` (or its nearest parent)."""
    for depth in range(len(path), 0, -1):
        for prefix, values in reversed(layers):
            if _defines(values, path[:depth]):
                return [*prefix, *path]
    return [*layers[0][0], *path]


def experiment_errors(
    params: Mapping[str, Any], exp: Mapping[str, Any], schema: Mapping[str, Any]
) -> list[tuple[list[Any], str]]:
    """Problems of one experiment's merged groups: (the key path that set the value, message).

    A path under ``experiments.{name}`` is the experiment's own; any other is a group's,
    shared with every experiment that reads it.
    """
    import jsonschema

    from usseg.backbones.registry import BACKBONES

    name = exp["name"]
    allowed = experiment_groups(exp)
    problems = [
        (["experiments", name, "overrides", group],
         f"not a group this experiment reads (it may override: {', '.join(allowed)})")
        for group in exp.get("overrides", {})
        if group not in allowed
    ]  # fmt: skip
    merged = experiment_params(params, exp)
    for group in allowed:
        layers = _layers(params, exp, group)
        validator = jsonschema.Draft202012Validator(schema["properties"][group])
        for error in sorted(validator.iter_errors(merged[group]), key=lambda e: list(e.absolute_path)):
            problems.append((_origin(layers, _error_path(error)), _describe(error)))
    if not problems:
        size, patch = merged["features"]["image_size"], BACKBONES[exp["backbone"]].patch_size
        if size % patch:
            where = _origin(_layers(params, exp, "features"), ["image_size"])
            problems.append((where, f"{size} is not a multiple of {exp['backbone']}'s patch size {patch}"))
    return problems


def feature_store_key(exp: Mapping[str, Any]) -> str:
    """Name of the feature store an experiment reads: it changes with everything the features depend on.

    Two experiments whose features settings, weights setting and split agree share a store.
    """
    features = exp["params"]["features"]
    inputs = {"features": features, "weights": exp["params"]["backbone"], "split": exp["params"]["dataset"]["split"]}
    return f"{features['image_size']}px-{features['facet']}-{params_hash(inputs)[:8]}"


def experiment_setup(exp: Mapping[str, Any], merged: Mapping[str, Any]) -> dict[str, Any]:
    """What a results row must state besides the method: image size, and for trained methods
    which split they trained on and how they were initialised."""
    setup: dict[str, Any] = {"image_size": merged["features"]["image_size"]}
    if merged["tracking"].get("rehearsal"):
        setup["inputs"] = STAND_INS
    if exp["method"] == "context_aware":
        group, dataset = merged["context_aware"], merged["dataset"]
        prepared = dataset.get("splits", [dataset["split"]])
        train = group["train_split"]
        if train == "auto":  # as the train stage resolves it: `train` when prepared, else the evaluation split
            train = "train" if "train" in prepared else dataset["split"]
        setup["image_size"] = group["image_size"] if group["arch"] != "vit" else setup["image_size"]
        setup["train_split"] = train + (" (= evaluation split)" if train == dataset["split"] else "")
        if group["arch"] == "vit":
            setup["init"] = f"frozen {exp['backbone']}"
        else:
            setup["init"] = f"checkpoint {Path(group['checkpoint']).name}" if group["checkpoint"] else "random"
    return setup


def expand_seeds(experiments: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One run per seed: an experiment with ``seeds: [0, 1]`` becomes ``{name}-seed0``, ``{name}-seed1``.

    Each overrides its method group's ``seed`` and records ``seed_group`` (the listed name), so
    the summary can report mean and std over the group. A generated name that another
    experiment already uses is an error naming both.
    """
    out: list[dict[str, Any]] = []
    for exp in experiments:
        if not exp.get("seeds"):
            out.append({k: v for k, v in exp.items() if k != "seeds"})
            continue
        for seed in exp["seeds"]:
            run = {k: v for k, v in exp.items() if k != "seeds"}
            run.update(name=f"{exp['name']}-seed{seed}", seed_group=exp["name"], seed=seed,
                       overrides=deep_merge(exp.get("overrides", {}), {exp["method"]: {"seed": seed}}))
            out.append(run)
    names = [e["name"] for e in out]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        groups = sorted({e["seed_group"] for e in out if e["name"] in clashes and "seed_group" in e})
        raise UssegError(f"params experiments: {clashes} generated by the seeds of {groups} are also used "
                         "as experiment names; rename one")
    return out


def resolve_experiments(params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Experiment name -> {name, method, dataset, backbone, params, params_hash, features_key, setup}
    (+ seed_group and seed for the runs of an experiment listing ``seeds``)."""
    resolved = {}
    for exp in expand_seeds(params["experiments"]):
        merged = experiment_params(params, exp)
        entry = {
            "name": exp["name"],
            "method": exp["method"],
            "dataset": exp["dataset"],
            "backbone": exp["backbone"],
            "params": merged,
            "params_hash": params_hash(merged),
        }
        entry["features_key"] = feature_store_key(entry)
        entry["setup"] = experiment_setup(exp, merged)
        entry.update({k: exp[k] for k in ("seed_group", "seed") if k in exp})
        resolved[exp["name"]] = entry
    return resolved


def load_params(files: Sequence[str | Path]) -> dict[str, Any]:
    """params.yaml then each ``--configfile``, deep-merged in order as Snakemake merges them."""
    params: dict[str, Any] = {}
    for path in files:
        params = deep_merge(params, load_yaml(path))
    return params


def _validate_cmd(args: argparse.Namespace) -> None:
    files = [args.file, *args.configfile]
    params = load_params(files)
    if args.preset:
        params["preset"] = args.preset
    validate(params, Path(args.schema_dir), files)
    for name, exp in resolve_experiments(select_preset(params)).items():
        print(f"{name}: {exp['method']} on {exp['dataset']} with {exp['backbone']} ({exp['params_hash']})")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="validate params.yaml and list the experiments")
    p.add_argument("--file", default="params.yaml", help="the params file (default params.yaml)")
    p.add_argument(
        "--configfile", action="append", default=[], help="a file merged over --file, as snakemake --configfile"
    )
    p.add_argument("--preset", default=None, help="validate this preset's experiments instead of `experiments`")
    p.add_argument("--schema-dir", default=str(SCHEMA_DIR), help="folder of the JSON schemas")
    p.set_defaults(func=_validate_cmd)
