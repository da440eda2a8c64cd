"""dvc.yaml, generated from params.yaml: one DVC stage per experiment, keyed by its name.

DVC's templating cannot follow ``experiments: NAME`` to the named preset, so the stages
are written by ``usseg dvc-yaml`` (and checked by its ``--check``, which a DVC stage and
the tests run). Each stage runs its experiment's Snakemake target and lists as
dependencies everything the experiment's result depends on: the shared groups and the
leaves of its method's group that its steps read, the experiment's own preset entry, local
input files, and the code its jobs run (the workflow's rule files for its stages and the
source files their commands import, not all of ``src/usseg``: editing one method leaves
the others' stages up to date). Outputs persist, so DVC never deletes them before a run
and Snakemake alone decides which jobs re-run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from usseg import params as P
from usseg.artifacts.atomic import atomic_file
from usseg.backbones.fetch import fetched_name
from usseg.errors import UssegError
from usseg.source_closure import closure, covering_paths
from usseg.steps import methods

DVC_YAML = Path("dvc.yaml")
SRC = Path(__file__).resolve().parents[1]  # the folder holding the usseg package
# What every experiment's DAG runs besides its method's steps: rule file -> the commands of its rules.
STAGE_RULES = {"datasets": ("download", "prepare"), "weights": ("weights", "checkpoint"),
               "features": ("features",), "refine": ("refine",), "evaluate": ("evaluate",)}  # fmt: skip
# Read when Snakemake parses the workflow: the job plan and the schemas (with their defaults).
WORKFLOW = ["Snakefile", "workflow/rules/common.smk", "workflow/schemas"]
PLAN_MODULES = ("usseg.cli", "usseg.jobplan")
HEADER = (
    "# Generated from params.yaml by `usseg dvc-yaml`: do not edit; run it again after changing\n"
    "# `experiments` or a preset's experiments (the `dvc-yaml` stage fails while this file is stale).\n"
)


def _local_files(params: Mapping[str, Any], exp: Mapping[str, Any]) -> list[str]:
    """Input files named in the experiment's parameters: folder datasets' image/mask folders and
    id list, local archive copies, local backbone weights, the files its method's steps declare."""
    groups = exp["params"]
    dataset = groups["dataset"]
    paths = [dataset.get(key) for key in ("images", "masks", "ids")]
    paths += [archive.get("path") for archive in (dataset.get("archives") or {}).values()]
    paths.append(groups["backbone"].get("weights"))
    # files a method's steps take from their params (context_aware's init checkpoint)
    paths += [f for step in methods()[exp["method"]].steps for f in step.files(groups[exp["method"]]).values()]
    # data/checkpoints/{name}.pth is the DAG's own output (fetched), not a file the user keeps
    return list(dict.fromkeys(str(p) for p in paths if p and not fetched_name(p, params)))


def code(commands: list[str], rule_files: list[str], modules: tuple[str, ...] = ()) -> list[str]:
    """The workflow files and the source those ``usseg`` commands run (usseg.source_closure)."""
    from usseg.cli import COMMANDS

    entry = {*PLAN_MODULES, *modules, *(COMMANDS[c] for c in commands)}
    files = covering_paths(closure(entry, SRC), SRC)
    return [*WORKFLOW, *(f"workflow/rules/{r}.smk" for r in rule_files), *files]


def experiment_code(params: Mapping[str, Any], exp: Mapping[str, Any]) -> list[str]:
    """What an experiment's jobs run: the shared stages' rules and commands, its method's steps."""
    from usseg.datasets.registry import ADAPTERS

    method = exp["method"]
    commands = [*(c for cs in STAGE_RULES.values() for c in cs), *(s.command for s in methods()[method].steps)]
    # imported by name, not by an import statement: the method's spec (usseg.steps.methods)
    # and the dataset's adapter (usseg.datasets.registry)
    adapter = ADAPTERS[params["data"]["datasets"][exp["dataset"]].get("adapter", exp["dataset"])]
    return code(commands, [*STAGE_RULES, method], (f"usseg.methods.{method}.spec", adapter))


def method_leaves(params: Mapping[str, Any], method: str) -> list[str]:
    """The keys of a method's group its steps read (``method.key``), in the group's order."""
    group = params.get(method) or {}
    read = {k for s in methods()[method].steps for k in s.keys}
    return [f"{method}.{k}" for k in group if k in read]


def _params_keys(params: Mapping[str, Any], exp: Mapping[str, Any]) -> list[str]:
    """The params.yaml keys one experiment's result depends on (see experiment_params)."""
    keys = [*P.SHARED_GROUPS, *method_leaves(params, exp["method"]), f"data.datasets.{exp['dataset']}"]
    if exp["backbone"] in (params.get("backbones") or {}):
        keys.append(f"backbones.{exp['backbone']}")
    files = [exp["params"]["backbone"].get("weights"), exp["params"].get("context_aware", {}).get("checkpoint")]
    keys += [f"checkpoints.{n}" for n in dict.fromkeys(fetched_name(f, params) for f in files) if n]
    preset = P.active_preset(params)
    if preset is None:
        return [*keys, "experiments"]
    if "defaults" in params["presets"][preset]:
        keys.append(f"presets.{preset}.defaults")
    # a seed's run (`{name}-seed{s}`) depends on the preset entry it was expanded from
    return [*keys, f"presets.{preset}.experiments.{exp.get('seed_group', exp['name'])}"]


def _metrics_file(exp: Mapping[str, Any]) -> str:
    return f"results/metrics/{exp['method']}/{exp['name']}.json"


def experiment_stage(params: Mapping[str, Any], exp: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "cmd": f"snakemake --cores all {_metrics_file(exp)}",
        "deps": [*experiment_code(params, exp), *_local_files(params, exp)],
        "params": _params_keys(params, exp),
        "outs": [{f"results/{exp['method']}/{exp['name']}": {"persist": True}}],
        # compact numeric metrics, versioned by git (not the DVC cache)
        "metrics": [{_metrics_file(exp): {"cache": False, "persist": True}}],
    }


def stages(params: dict[str, Any]) -> dict[str, Any]:
    """dvc.yaml's content for params.yaml's active experiments."""
    P.validate(params)
    experiments = P.resolve_experiments(P.select_preset(params))
    used = sorted({e["method"] for e in experiments.values()})
    # reports over several experiments that `rule all` adds per method (their specs), target first
    reports = [r.outputs for m in used for r in methods()[m].reports]
    # one picture grid per dataset (the `grid` rule): the same images across its experiments
    reports += [(f"results/grids/{d}.png",) for d in sorted({e["dataset"] for e in experiments.values()})]
    out: dict[str, Any] = {
        # its output follows the source tree too (the stages' code dependencies)
        "dvc-yaml": {"cmd": "usseg dvc-yaml --check", "deps": ["params.yaml", "src/usseg"]},
    }
    out.update({name: experiment_stage(params, exp) for name, exp in experiments.items()})
    report_commands = ["summary", "grid", *(r.command for m in used for r in methods()[m].reports)]
    out["summary"] = {
        # the summary and the cross-experiment reports only, not the whole DAG
        "cmd": " ".join(["snakemake --cores 1 results/summary.md", *(r[0] for r in reports)]),
        "deps": [*code(report_commands, ["evaluate", "report", *used]),
                 *(_metrics_file(e) for e in experiments.values())],
        # summary.md/.csv are versioned by git (un-ignored), the reports by the DVC cache
        "outs": [{"results/summary.md": {"cache": False, "persist": True}},
                 {"results/summary_headline.csv": {"cache": False, "persist": True}},
                 *({path: {"persist": True}} for r in reports for path in r)],
        "plots": [{"results/summary.csv": {"cache": False, "persist": True, "x": "experiment",
                                           "y": "hungarian_mIoU", "template": "bar_horizontal"}}],
    }
    return {"stages": out}


def render(params: dict[str, Any]) -> str:
    return HEADER + yaml.safe_dump(stages(params), sort_keys=False, width=100)


def _dvc_yaml_cmd(args: argparse.Namespace) -> None:
    text = render(P.load_yaml(args.params_file))
    out = Path(args.out)
    if args.check:
        if not out.exists() or out.read_text() != text:
            raise UssegError(
                f"{out} is out of date with {args.params_file}: run `usseg dvc-yaml` and commit it"
            )
        return
    with atomic_file(out) as fh:
        fh.write(text)
    print(f"wrote {out} ({len(P.select_preset(P.load_yaml(args.params_file))['experiments'])} experiments)",
          file=sys.stderr)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dvc-yaml", help="write dvc.yaml from params.yaml (one stage per experiment)")
    p.add_argument("--params-file", default="params.yaml", help="the params file to read")
    p.add_argument("--out", default=str(DVC_YAML), help="the dvc.yaml to write (default %(default)s)")
    p.add_argument("--check", action="store_true", help="fail if the file is not what would be written")
    p.set_defaults(func=_dvc_yaml_cmd)
