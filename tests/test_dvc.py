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
    assert [folder["images"], folder["masks"], folder["ids"]] == stage["deps"][3:6]


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
