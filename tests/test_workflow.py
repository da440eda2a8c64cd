"""End to end: Snakemake runs the kmeans branch on a tiny demo, tracked and resumable."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import yaml

from conftest import jobs_planned, make_workdir, run_tool, run_workflow, tiny_params
from usseg.zarr_io import open_zarr

pytestmark = pytest.mark.e2e

EXP = [{"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"}]


@pytest.fixture(scope="module")
def done_workflow(tmp_path_factory, random_vits14):
    """One real run shared by the tests of this module (each test copies what it changes)."""
    wf = make_workdir(tmp_path_factory.mktemp("kmeans"), tiny_params(random_vits14, EXP))
    run_workflow(wf)
    return wf


def test_kmeans_branch_end_to_end(done_workflow):
    wf = done_workflow
    metrics = json.loads((wf / "results/kmeans/km/eval/metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0
    assert metrics["matching"] == "hungarian" and metrics["split"] == "val"
    assert metrics["num_images"] == 6
    assert metrics["setup"] == json.loads((wf / "results/.experiments/km.json").read_text()).get("setup", {})
    # DVC's metrics file: the same scores in percent, both matchings, numbers only.
    compact = json.loads((wf / "results/metrics/kmeans/km.json").read_text())
    default = metrics["protocols"]["default"]
    assert compact == {
        "mIoU": round(100 * metrics["mIoU"], 2), "pixel_accuracy": round(100 * metrics["pixel_accuracy"], 2),
        **{m: {k: round(100 * default[m][k], 2) for k in ("mIoU", "pixel_accuracy")} for m in ("hungarian", "majority")},
    }
    assert (wf / "results/kmeans/km/eval/confusion_default.png").stat().st_size > 1000
    assert "| demo | km | kmeans | dinov2_vits14 |" in (wf / "results/summary.md").read_text()

    (store_path,) = (wf / "results/features/demo/dinov2_vits14").glob("*.zarr")
    store = open_zarr(store_path)
    assert store["patch"].dtype == np.float16
    assert store["patch"].shape == (6, 8, 8, 384)
    assert store["attn"].shape == (6, 6, 8, 8)
    assert store["patch"].encoding["chunks"][0] == 1
    assert bool(store["done"].all())
    assert len(set(store["height"].values.tolist())) > 1  # original sizes kept as coordinates

    # Nothing left to do; a kmeans parameter change re-runs kmeans and what follows only.
    assert jobs_planned(wf) == []
    original = (wf / "params.yaml").read_text()
    params = yaml.safe_load(original)
    params["kmeans"]["k"] = 3
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        assert sorted(jobs_planned(wf)) == ["all", "evaluate", "grid", "kmeans", "refine", "summary"]
    finally:
        (wf / "params.yaml").write_text(original)


def test_mlflow_lineage(done_workflow):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{done_workflow / 'results/mlflow.db'}")
    exp = mlflow.get_experiment_by_name("usseg")
    runs = mlflow.search_runs([exp.experiment_id], output_format="list")
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["usseg.method"] == "kmeans" and parent.data.tags["usseg.backbone"] == "dinov2_vits14"
    children = {r.data.tags["usseg.job"]: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
    assert set(children) >= {"kmeans", "refine", "evaluate"}
    evaluate = children["evaluate"]
    compact = json.loads((done_workflow / "results/metrics/kmeans/km.json").read_text())
    full = json.loads((done_workflow / "results/kmeans/km/eval/metrics.json").read_text())
    # percent, like the summary; the headline unrounded (equal to the parent run's), the rest as in the compact file
    assert evaluate.data.metrics["mIoU"] == pytest.approx(100 * full["mIoU"], abs=1e-9)
    assert round(evaluate.data.metrics["mIoU"], 2) == compact["mIoU"]
    assert evaluate.data.metrics["majority.mIoU"] == compact["majority"]["mIoU"]
    digests = {d.dataset.name: d.dataset.digest for d in evaluate.inputs.dataset_inputs}
    assert "labels" in digests and all(digests.values())
    shared = mlflow.get_experiment_by_name("usseg-shared")
    jobs = {r.data.tags["usseg.job"] for r in mlflow.search_runs([shared.experiment_id], output_format="list")}
    (store_path,) = (done_workflow / "results/features/demo/dinov2_vits14").glob("*.zarr")
    assert "prepare/demo" in jobs and f"features/demo/dinov2_vits14/{store_path.stem}" in jobs


def test_results_page(done_workflow):
    """`snakemake --report` (no --cores) gathers the summary, pictures and grid, each captioned."""
    run_tool(done_workflow, "snakemake", "--report", "report.zip")
    with zipfile.ZipFile(done_workflow / "report.zip") as zf:
        names = zf.namelist()
        page = zf.read("report/report.html").decode().replace('\\"', '"')  # captions sit in JSON strings
    files = sorted(name.split("/", 4)[-1] for name in names if name.startswith("report/data/raw/"))
    assert files == ["confusion_default.png", "demo.png", "overlays/demo_val_0000.png",
                     "per_class_iou_default.png", "summary.csv", "summary.md"]
    labels = ('"method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14", '
              '"matching": "hungarian", "CRF": "none"')
    assert page.count(labels) == 3  # confusion matrix, per-class IoU, overlay
    code = '<tt class="docutils literal">{}</tt>'
    for said in (f"Method {code.format('kmeans')}", f"dataset {code.format('demo')}",
                 f"backbone {code.format('dinov2_vits14')}"):
        assert page.count(said) == 3, said  # in each of the experiment's captions
    assert f"<strong>Overlay</strong> of image {code.format('demo_val_0000')}" in page
    assert f"Dataset {code.format('demo')}: the same images (columns)" in page
    assert "<strong>usseg</strong>: unsupervised semantic segmentation" in page


def test_same_seed_same_numbers(done_workflow, workdir, random_vits14, tmp_path):
    first = json.loads((done_workflow / "results/kmeans/km/eval/metrics.json").read_text())
    run_workflow(done_workflow, "--forcerun", "kmeans")
    second = json.loads((done_workflow / "results/kmeans/km/eval/metrics.json").read_text())
    assert first["protocols"] == second["protocols"]


def test_bad_params_stop_the_run_naming_the_key(workdir, random_vits14):
    params = tiny_params(random_vits14, [{**EXP[0], "backbone": "no_such_vit"}])
    proc = run_workflow(workdir(params), "-n", check=False)
    assert proc.returncode != 0 and "no_such_vit" in proc.stderr
    params = tiny_params(random_vits14, EXP)
    params["kmeans"]["niterr"] = 5
    proc = run_workflow(workdir(params), "-n", check=False)
    assert proc.returncode != 0 and "niterr" in proc.stderr
