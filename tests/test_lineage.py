"""End to end: each experiment's headline number traces back to its data, weights and code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from conftest import run_tool, run_workflow

pytestmark = pytest.mark.e2e

# The jobs each trace must pass through (evaluate is where it starts).
CHAIN = {
    "km": ["refine", "kmeans"],
    "d2": ["refine", "datus2_masks", "datus2_segments", "datus2_pseudolabels", "datus2_segment_features"],
}
SHARED = ["prepare/demo", "weights/dinov2_vits14"]  # + the features store's job (named by its key)


@pytest.fixture(scope="module")
def lineage(km_d2_workflow: Path) -> Path:
    """The session's finished kmeans + datus2 workflow (conftest.KM_D2); tests change copies of it."""
    return km_d2_workflow


def copy_of(wf: Path, dest: Path) -> Path:
    shutil.copytree(wf, dest, symlinks=True)
    return dest


def client_of(wf: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{wf / 'results/mlflow.db'}")


def all_runs(client: Any) -> list[Any]:
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000))


def current_run(client: Any, experiment: str, job: str) -> Any:
    exp = client.get_experiment_by_name("usseg")
    query = f"tags.`usseg.experiment` = '{experiment}' and tags.`usseg.job` = '{job}' and tags.`usseg.current` = 'true'"
    (run,) = client.search_runs([exp.experiment_id], query)
    return run


def test_trace_follows_every_experiment_to_data_weights_and_code(lineage: Path) -> None:
    for name, jobs in CHAIN.items():
        out = run_tool(lineage, "usseg", "trace", name).stdout
        produced = [line.split("<- ")[1].split(" run ")[0] for line in out.splitlines() if "<- " in line]
        key = json.loads((lineage / f"results/.experiments/{name}.json").read_text())["features_key"]
        assert sorted(set(produced)) == sorted([*jobs, *SHARED, f"features/demo/dinov2_vits14/{key}"]), out
        assert (
            out.splitlines()[0].startswith(f"{name}: mIoU = ")
            and "every link matches" in out.splitlines()[-1]
        )
        assert "checkpoint/dinov2_vits14" in out and " external " in out
    out = run_tool(lineage, "usseg", "trace", "km", "--metric", "pixel_accuracy").stdout
    metrics = json.loads((lineage / "results/kmeans/km/eval/metrics.json").read_text())
    assert out.splitlines()[0].startswith(f"km: pixel_accuracy = {100 * metrics['pixel_accuracy']:.2f} %")


def test_each_file_has_one_digest_in_every_run_that_names_it(lineage: Path) -> None:
    from usseg.tracking.trace import run_items

    runs = all_runs(client_of(lineage))
    digests: dict[str, set[str]] = {}
    for run in runs:
        for item in run_items(run):
            digests.setdefault(item.path, set()).add(item.digest)
    assert {path: d for path, d in digests.items() if len(d) != 1} == {}
    assert {"data/prepared/demo", "results/kmeans/km/refined", "results/kmeans/km/patch_scores.zarr"} <= set(
        digests
    )
    assert [r.info.status for r in runs if r.info.status != "FINISHED"] == []


def test_runs_table_has_one_current_row_per_experiment_in_percent(lineage: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{lineage / 'results/mlflow.db'}")
    table = mlflow.search_runs(
        experiment_names=["usseg"],
        filter_string="tags.`usseg.kind` = 'experiment' and tags.`usseg.current` = 'true'",
    )
    assert sorted(table["tags.usseg.experiment"]) == ["d2", "d2-k3", "km"]
    for _, row in table.iterrows():
        name, method = row["tags.usseg.experiment"], row["tags.usseg.method"]
        metrics = json.loads((lineage / f"results/{method}/{name}/eval/metrics.json").read_text())
        assert row["metrics.mIoU"] == pytest.approx(100 * metrics["mIoU"], abs=1e-9)
        assert row["metrics.pixel_accuracy"] == pytest.approx(100 * metrics["pixel_accuracy"], abs=1e-9)
        assert (row["tags.usseg.protocol"], row["tags.usseg.matching"], row["tags.usseg.crf"]) == (
            "default",
            metrics["matching"],
            metrics["crf"],
        )
        assert (row["tags.usseg.dataset"], row["tags.usseg.backbone"]) == ("demo", "dinov2_vits14")
        parent = client_of(lineage).get_run(row["run_id"])
        shared = {"kmeans": {"features"}, "datus2": {"segments", "pseudolabels"}}[method]  # the stores it read
        assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {"prepared/demo", *shared}


def test_a_moved_copy_serves_its_own_artifacts_and_a_rerun_is_current(
    lineage: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = copy_of(lineage, tmp_path / "first")
    moved = copy_of(first, tmp_path / "moved")
    shutil.rmtree(first)
    client = client_of(moved)
    old = current_run(client, "km", "evaluate")
    monkeypatch.chdir(moved)
    local = Path(client.download_artifacts(old.info.run_id, "pictures", str(tmp_path)))
    assert (local / "confusion_default.png").read_bytes() == (
        moved / "results/kmeans/km/eval/confusion_default.png"
    ).read_bytes()

    run_workflow(moved, "--forcerun", "evaluate")
    exp = client.get_experiment_by_name("usseg")
    runs = client.search_runs([exp.experiment_id], "tags.`usseg.experiment` = 'km' and tags.`usseg.job` = 'evaluate'",
                              order_by=["attributes.start_time ASC"])  # fmt: skip
    assert [(r.info.run_id == old.info.run_id, r.data.tags["usseg.current"]) for r in runs] == [
        (True, "false"),
        (False, "true"),
    ]
    assert "every link matches" in run_tool(moved, "usseg", "trace", "km").stdout


def test_trace_names_a_label_map_rewritten_after_the_run(lineage: Path, tmp_path: Path) -> None:
    wf = copy_of(lineage, tmp_path / "wf")
    png = sorted((wf / "results/kmeans/km/refined").glob("*.png"))[0]
    labels = np.asarray(Image.open(png))
    Image.fromarray((labels + 1) % 2).save(png)
    proc = run_tool(wf, "usseg", "trace", "km", check=False)
    evaluate = current_run(client_of(wf), "km", "evaluate")
    assert proc.returncode == 2
    assert (f"broken link: results/kmeans/km/refined (input 'labels' of evaluate run {evaluate.info.run_id})"
            " has digest") in proc.stderr  # fmt: skip
    assert "every link matches" in run_tool(wf, "usseg", "trace", "d2").stdout


def test_trace_names_a_digest_that_no_run_produced(lineage: Path, tmp_path: Path) -> None:
    wf = copy_of(lineage, tmp_path / "wf")
    client = client_of(wf)
    client.delete_run(current_run(client, "km", "refine").info.run_id)
    proc = run_tool(wf, "usseg", "trace", "km", check=False)
    evaluate = current_run(client, "km", "evaluate")
    assert proc.returncode == 2
    assert ("broken link: input 'labels' (results/kmeans/km/refined, sha256 ") in proc.stderr
    assert (f"of evaluate run {evaluate.info.run_id}: no finished run logged this digest as an output"
            in proc.stderr)  # fmt: skip


def test_two_checkouts_sharing_a_store_each_trace_their_own_runs(lineage: Path, tmp_path: Path) -> None:
    """Checkout b runs experiment km with another k into checkout a's store. Its runs used to
    become km's current ones, and a's `usseg trace km` followed them to b's label maps and
    called a's own files BROKEN (#18.8)."""
    import yaml

    a, b = copy_of(lineage, tmp_path / "a"), copy_of(lineage, tmp_path / "b")
    (b / "results/.workspace-id").unlink()  # b is another checkout, not a copy of a
    params = yaml.safe_load((b / "params.yaml").read_text())
    params["presets"]["tiny"]["experiments"]["km"]["overrides"] = {"kmeans": {"k": 3}}
    (b / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shared = {"MLFLOW_TRACKING_URI": f"sqlite:///{a / 'results/mlflow.db'}"}
    run_workflow(b, "results/metrics/kmeans/km.json", env=shared)
    assert "every link matches" in run_tool(a, "usseg", "trace", "km", env=shared).stdout
    ids = {p: (p / "results/.workspace-id").read_text().strip() for p in (a, b)}
    client = client_of(a)
    exp = client.get_experiment_by_name("usseg")
    parents = client.search_runs([exp.experiment_id], "tags.`usseg.experiment` = 'km' and "
                                 "tags.`usseg.kind` = 'experiment' and tags.`usseg.current` = 'true'")  # fmt: skip
    assert sorted(r.data.tags["usseg.workspace"] for r in parents) == sorted(ids.values())  # one current each
