"""End to end: what an experiment records is what ran (per-experiment features, validated overrides)."""

from __future__ import annotations

import json

import pytest

from conftest import run_workflow, tiny_params
from usseg.tracking.sync import flatten as _flatten
from usseg.zarr_io import open_zarr

pytestmark = pytest.mark.e2e

BASE = {"method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"}
EXPS = [
    {**BASE, "name": "km112"},
    {**BASE, "name": "km56", "overrides": {"features": {"image_size": 56}}},
    {**BASE, "name": "km112-k3", "overrides": {"kmeans": {"k": 3}}},
]


def test_features_per_experiment_and_recorded_params_are_the_ones_that_ran(workdir, random_vits14):
    wf = workdir(tiny_params(random_vits14, EXPS))
    run_workflow(wf)
    records = {e["name"]: json.loads((wf / f"results/.experiments/{e['name']}.json").read_text()) for e in EXPS}

    # Two image sizes, two stores with their own patch grids; equal features share one store.
    stores = sorted((wf / "results/features/demo/dinov2_vits14").glob("*.zarr"))
    assert [s.name.split("-")[0] for s in stores] == ["112px", "56px"]
    grids = {s.name.split("-")[0]: open_zarr(s).attrs["grid"] for s in stores}
    assert grids == {"112px": [8, 8], "56px": [4, 4]}
    assert records["km112"]["features_key"] == records["km112-k3"]["features_key"]
    assert records["km112"]["features_key"] != records["km56"]["features_key"]
    assert records["km56"]["setup"] == {"image_size": 56}

    # Every job's MLflow params equal the params its command received (the experiment's group).
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{wf / 'results/mlflow.db'}")
    runs = mlflow.search_runs([mlflow.get_experiment_by_name("usseg").experiment_id], output_format="list")
    checked = 0
    for run in runs:
        job, name = run.data.tags.get("usseg.job"), run.data.tags.get("usseg.experiment")
        if job in ("kmeans", "refine", "evaluate"):
            assert run.data.params == _flatten(records[name]["params"][job]), (name, job)
            checked += 1
    assert checked == 9
    shared = mlflow.search_runs([mlflow.get_experiment_by_name("usseg-shared").experiment_id], output_format="list")
    features = {r.data.tags["usseg.job"]: r.data.params for r in shared if r.data.tags["usseg.job"].startswith("features/")}
    assert len(features) == 2
    for exp in ("km112", "km56"):
        key = records[exp]["features_key"]
        expected = _flatten({**records[exp]["params"]["features"], "split": "val"})
        assert features[f"features/demo/dinov2_vits14/{key}"] == expected


def test_typo_in_an_ablation_stops_at_start(workdir, random_vits14):
    exps = [EXPS[0], {**BASE, "name": "kmeans-x", "overrides": {"kmeans": {"kk": 3}}}]
    proc = run_workflow(workdir(tiny_params(random_vits14, exps)), "-n", check=False)
    assert proc.returncode != 0
    assert "params.yaml: experiment 'kmeans-x' is invalid" in proc.stderr
    assert "experiments.kmeans-x.overrides.kmeans.kk" in proc.stderr
