"""DVC follows the Snakemake DAG: stages keyed by experiment, every dependency declared,
outputs kept for Snakemake to decide what re-runs; metrics and params diff between commits."""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_tool, run_workflow, tiny_params
from usseg.cli import main

EXPERIMENTS = [
    {"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"},
    {"name": "km-seed1", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14",
     "overrides": {"kmeans": {"seed": 1}}},
]


def check(params_file: Path) -> int:
    """`usseg dvc-yaml --check` of the repo's dvc.yaml against ``params_file``."""
    return main(["dvc-yaml", "--check", "--params-file", str(params_file), "--out", str(REPO / "dvc.yaml")])


def test_committed_dvc_yaml_is_in_sync_with_params() -> None:
    assert check(REPO / "params.yaml") == 0
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert "presets.demo.experiments.kmeans-demo" in stages["kmeans-demo"]["params"]


def test_stale_dvc_yaml_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["presets"]["demo"]["experiments"]["kmeans-demo-k3"] = {"method": "kmeans"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert check(tmp_path / "params.yaml") == 2
    assert "dvc.yaml is out of date" in capsys.readouterr().err


def test_folder_dataset_files_are_stage_dependencies() -> None:
    from usseg.dvc_stages import stages

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    stage = stages({**params, "experiments": "sample"})["stages"]["kmeans-voc-sample"]
    folder = params["data"]["datasets"]["voc2012_sample"]
    local = [d for d in stage["deps"] if not d.startswith(("Snakefile", "workflow/", "src/usseg/"))]
    assert [folder["images"], folder["masks"], folder["ids"]] == local[:3]


def test_an_experiment_stage_depends_on_its_own_steps_code_and_param_leaves() -> None:
    """Not all of src/usseg (#21): editing one method leaves the other methods' stages up to date."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def method_packages(stage: dict) -> set[str]:
        parts = (d.split("/") for d in stage["deps"] if d.startswith("src/usseg/methods/"))
        return {p[3] for p in parts if "." not in p[3]}

    assert method_packages(stages["kmeans-demo"]) == {"kmeans"}
    assert method_packages(stages["multilevel-demo"]) == {"multilevel"}
    assert method_packages(stages["context_aware-demo"]) == {"context_aware"}
    # spectral runs DatUS²'s crop step (its command's module and what that imports), not datus2's spec
    assert method_packages(stages["spectral-demo"]) == {"spectral", "datus2"}
    assert "src/usseg/methods/datus2/cli.py" in stages["spectral-demo"]["deps"]
    assert "src/usseg/methods/datus2/spec.py" not in stages["spectral-demo"]["deps"]
    kmeans = stages["kmeans-demo"]
    # the dataset's adapter (imported by name) and the stages' code, not the rehearsal or dvc.yaml's writer
    assert {"src/usseg/datasets/demo.py", "src/usseg/features", "src/usseg/refine"} <= set(kmeans["deps"])
    assert not {"src/usseg", "workflow", "src/usseg/datasets/voc2012.py", "src/usseg/dvc_stages.py",
                "src/usseg/rehearsal", "workflow/rules/datus2.smk"} & set(kmeans["deps"])  # fmt: skip
    assert "kmeans.k" in kmeans["params"] and "kmeans" not in kmeans["params"]


def test_source_closure_follows_imports_inside_functions_and_submodules(tmp_path: Path) -> None:
    from usseg.source_closure import closure, covering_paths

    src = tmp_path / "src"
    pkg = src / "usseg"
    for name, text in {
        "__init__.py": "",
        "a.py": "from usseg.b import helper\n",
        "b/__init__.py": "",
        "b/helper.py": "def f():\n    import usseg.c.deep\n",
        "b/data.yaml": "x: 1\n",
        "c/__init__.py": "from usseg.b import helper  # a function-free package init\n",
        "c/deep.py": "import os\nfrom usseg.c import not_a_module\n",
        "c/other.py": "",
        "unused.py": "",
    }.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    files = closure(["usseg.a"], src)
    assert {p.relative_to(pkg).as_posix() for p in files} == {
        "__init__.py", "a.py", "b/__init__.py", "b/helper.py", "b/data.yaml", "c/__init__.py", "c/deep.py"}
    # a folder when all of it is needed, else its files
    assert covering_paths(files, src) == [
        "src/usseg/__init__.py", "src/usseg/a.py", "src/usseg/b", "src/usseg/c/__init__.py", "src/usseg/c/deep.py"]


def planned(wf: Path) -> Counter[str]:
    """Jobs per rule in `snakemake -n`'s plan for the default target, `all` itself left out."""
    out = run_workflow(wf, "-n", "--quiet", "rules").stdout
    rows = (line.split() for line in out.split("total")[0].splitlines())
    return Counter({r[0]: int(r[1]) for r in rows if len(r) == 2 and r[1].isdigit() and r[0] != "all"})


def ran(wf: Path, since: set[Path]) -> Counter[str]:
    """Jobs per rule that Snakemake ran, from the logs it wrote after ``since``."""
    jobs: Counter[str] = Counter()
    for log in sorted(set((wf / ".snakemake/log").glob("*.log")) - since):
        jobs.update(re.findall(r"^(?:local)?rule (\w+):$", log.read_text(), flags=re.M))
    return jobs


def jobs_run_by(wf: Path, *command: str) -> Counter[str]:
    """Jobs per rule that Snakemake ran during ``command``."""
    before = set((wf / ".snakemake/log").glob("*.log"))
    run_tool(wf, *command)
    return ran(wf, before)


def repro_jobs(wf: Path) -> Counter[str]:
    return jobs_run_by(wf, "dvc", "repro")


def git(wf: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=wf, check=True, capture_output=True)


@pytest.mark.e2e
def test_snakemake_then_dvc_commit_then_repro_runs_what_snakemake_plans_and_diffs(
    workdir, random_vits14, tmp_path
):
    wf = workdir(tiny_params(random_vits14, EXPERIMENTS))
    (wf / ".gitignore").write_text((REPO / ".gitignore").read_text())
    run_tool(wf, "usseg", "dvc-yaml")
    git(wf, "init", "-q")
    git(wf, "config", "user.email", "t@t")
    git(wf, "config", "user.name", "t")
    run_tool(wf, "dvc", "init", "-q")
    run_tool(wf, "dvc", "config", "core.analytics", "false")
    run_tool(wf, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    # the README's main job: the whole DAG in one Snakemake, then DVC records what it made
    first = planned(wf)
    assert jobs_run_by(wf, "snakemake", "--cores", "2") == first + Counter({"all": 1})
    assert "changed" in run_tool(wf, "dvc", "status").stdout  # nothing recorded yet
    run_tool(wf, "dvc", "commit", "-f")
    assert "up to date" in run_tool(wf, "dvc", "status").stdout
    assert not repro_jobs(wf)  # dvc repro agrees: every stage is recorded as it is
    shown = json.loads(run_tool(wf, "dvc", "metrics", "show", "--json").stdout)
    metrics = shown[""]["data"]["results/metrics/kmeans/km.json"]["data"]
    assert 0 <= metrics["mIoU"] <= 100 and set(metrics) == {"mIoU", "pixel_accuracy", "hungarian", "majority"}
    lock = yaml.safe_load((wf / "dvc.lock").read_text())
    assert {"km", "km-seed1", "summary"} <= set(lock["stages"])
    git(wf, "add", "-A")
    git(wf, "commit", "-qm", "first run")
    assert "results/metrics/kmeans/km.json" in subprocess.run(
        ["git", "ls-files"], cwd=wf, capture_output=True, text=True, check=True).stdout
    assert "up to date" in run_tool(wf, "dvc", "status").stdout
    # code: another method's package is no dependency of these stages, kmeans' own is
    # (the dvc-yaml check follows all of src/usseg: the code dependencies it writes may change)
    def changed_stages() -> set[str]:
        status = run_tool(wf, "dvc", "status").stdout
        return {line[:-1] for line in status.splitlines() if line.endswith(":") and not line[0].isspace()}

    datus2 = wf / "src/usseg/methods/datus2/cli.py"
    datus2.write_text(datus2.read_text() + "# edited\n")
    assert changed_stages() == {"dvc-yaml"}
    own = wf / "src/usseg/methods/kmeans/cli.py"
    own.write_text(own.read_text() + "# edited\n")
    assert changed_stages() == {"dvc-yaml", "km", "km-seed1"}
    run_tool(wf, "dvc", "commit", "-f")

    def change(edit) -> tuple[Counter[str], Counter[str]]:
        params = yaml.safe_load((wf / "params.yaml").read_text())
        edit(params)
        (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        assert "changed" in run_tool(wf, "dvc", "status").stdout  # DVC sees the change
        return planned(wf), repro_jobs(wf)

    # evaluation only: both evaluations and the summary, no clustering, no features
    plan, jobs = change(lambda p: p["evaluate"].update(matching="majority"))
    assert jobs == plan == Counter({"evaluate": 2, "summary": 1, "grid": 1})
    # one experiment's override: that experiment's branch from kmeans on
    plan, jobs = change(lambda p: p["presets"]["tiny"]["experiments"]["km-seed1"]["overrides"].update(
        kmeans={"seed": 2}))
    assert jobs == plan == Counter({"kmeans": 1, "refine": 1, "evaluate": 1, "summary": 1, "grid": 1})
    # the kmeans group: both branches from kmeans on, the features are reused
    plan, jobs = change(lambda p: p["kmeans"].update(k=3))
    assert jobs == plan == Counter({"kmeans": 2, "refine": 2, "evaluate": 2, "summary": 1, "grid": 1})
    assert not planned(wf)

    params_diff = json.loads(run_tool(wf, "dvc", "params", "diff", "HEAD", "--json").stdout)["params.yaml"]
    assert params_diff["kmeans.k"] == {"old": None, "new": 3}
    assert params_diff["evaluate.matching"] == {"old": "hungarian", "new": "majority"}
    metrics_diff = json.loads(run_tool(wf, "dvc", "metrics", "diff", "HEAD", "--json").stdout)
    assert set(metrics_diff) == {"results/metrics/kmeans/km.json", "results/metrics/kmeans/km-seed1.json"}

    run_tool(wf, "dvc", "push")
    assert any((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the remote"
