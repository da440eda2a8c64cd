"""DVC wraps the Snakemake targets: repro, metrics show/diff, push to the local remote."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import run_tool, tiny_params

pytestmark = pytest.mark.e2e


def test_dvc_repro_metrics_and_push(workdir, random_vits14, tmp_path):
    exp = [{"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"}]
    wf = workdir(tiny_params(random_vits14, exp))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "t@t"], ["git", "config", "user.name", "t"]):
        subprocess.run(cmd, cwd=wf, check=True)
    run_tool(wf, "dvc", "init", "-q")
    run_tool(wf, "dvc", "config", "core.analytics", "false")
    run_tool(wf, "dvc", "remote", "add", "-d", "local", str(tmp_path / "remote"))
    subprocess.run(["git", "add", "-A"], cwd=wf, check=True)
    subprocess.run(["git", "commit", "-qm", "start"], cwd=wf, check=True)

    run_tool(wf, "dvc", "repro")
    shown = json.loads(run_tool(wf, "dvc", "metrics", "show", "--json").stdout)
    metrics = shown[""]["data"]["results/metrics/kmeans/km.json"]["data"]
    assert 0 <= metrics["mIoU"] <= 100 and set(metrics) == {"mIoU", "pixel_accuracy", "hungarian", "majority"}
    lock = yaml.safe_load((wf / "dvc.lock").read_text())
    assert "experiment@0" in lock["stages"]
    subprocess.run(["git", "add", "-A"], cwd=wf, check=True)
    subprocess.run(["git", "commit", "-qm", "repro"], cwd=wf, check=True)

    # Nothing changed: DVC has nothing to run. A kmeans change is a new measurement.
    assert "didn't change" in run_tool(wf, "dvc", "repro").stdout or "up to date" in run_tool(wf, "dvc", "status").stdout
    params = yaml.safe_load((wf / "params.yaml").read_text())
    params["kmeans"]["k"] = 3
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_tool(wf, "dvc", "repro")
    diff = json.loads(run_tool(wf, "dvc", "metrics", "diff", "--json").stdout)
    changed = diff["results/metrics/kmeans/km.json"]
    assert "hungarian.mIoU" in changed

    run_tool(wf, "dvc", "push")
    assert any((tmp_path / "remote").rglob("*")), "dvc push wrote nothing to the remote"
