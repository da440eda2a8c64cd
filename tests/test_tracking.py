"""The MLflow audit trail: digests, run status, the current-run mark, parent metrics."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from usseg.cli import main
from usseg.evaluation.cli import headline
from usseg.tracking import job_run, log_experiment_metrics, log_figure, log_input, log_metrics, log_output
from usseg.tracking.digest import digest_path, file_digest
from usseg.tracking.runs import ARTIFACT_ROOT, CURRENT, JobKilled


def test_snakemake_marker_does_not_change_a_folder_digest(tmp_path: Path) -> None:
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    (folder / "labels").mkdir()
    (folder / "labels" / "a.png").write_bytes(b"\x89PNG")
    before = digest_path(folder)
    (folder / ".snakemake_timestamp").write_text("")
    assert digest_path(folder) == before
    (folder / "labels" / "a.png").write_bytes(b"\x89PNG!")
    assert digest_path(folder) != before


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tracking database for the module: creating its schema is the slow part."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: str) -> Any:
    """An MLflow client on the module's store, the cwd a fresh workflow root."""
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    monkeypatch.chdir(tmp_path)
    return mlflow.MlflowClient(mlflow_db)


def experiment(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "method": "kmeans",
        "dataset": "demo",
        "backbone": "vit",
        "params_hash": "h",
        "mlflow_experiment": "usseg-test",
        "params": {"kmeans": {"k": 3}},
    }


def job_runs(client: Any, name: str, job: str) -> list[Any]:
    exp = client.get_experiment_by_name("usseg-test")
    query = f"tags.`usseg.experiment` = '{name}' and tags.`usseg.job` = '{job}'"
    return client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time ASC"])


def test_a_failing_job_ends_failed_and_sigterm_ends_killed(store: Any, tmp_path: Path) -> None:
    exp = experiment(tmp_path.name)
    with pytest.raises(ValueError), job_run("kmeans", {"k": 3}, exp):
        raise ValueError("bad input")
    with pytest.raises(JobKilled), job_run("kmeans", {"k": 3}, exp):
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), job_run("kmeans", {"k": 3}, exp):
        raise KeyboardInterrupt
    assert [r.info.status for r in job_runs(store, tmp_path.name, "kmeans")] == ["FAILED", "KILLED", "KILLED"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_cli_job_that_errors_leaves_no_running_run(store: Any, tmp_path: Path) -> None:
    record = tmp_path / "exp.json"
    record.write_text(json.dumps(experiment(tmp_path.name)))
    code = main(
        [
            "kmeans",
            "--features",
            "missing.zarr",
            "--dataset-dir",
            "missing",
            "--out",
            "o.zarr",
            "--params",
            '{"k": 3}',
            "--experiment",
            str(record),
        ]
    )
    assert code == 2
    assert [r.info.status for r in job_runs(store, tmp_path.name, "kmeans")] == ["FAILED"]


def test_the_newest_finished_run_is_current(store: Any, tmp_path: Path) -> None:
    exp = experiment(tmp_path.name)
    for _ in range(2):
        with job_run("refine", {}, exp):
            pass
    with pytest.raises(RuntimeError), job_run("refine", {}, exp):
        raise RuntimeError("crash")
    runs = job_runs(store, tmp_path.name, "refine")
    assert [(r.info.status, r.data.tags[CURRENT]) for r in runs] == [
        ("FINISHED", "false"),
        ("FINISHED", "true"),
        ("FAILED", "false"),
    ]


def test_inputs_and_outputs_carry_full_digests_and_relative_paths(store: Any, tmp_path: Path) -> None:
    from usseg.tracking.trace import Item, run_items

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(b"a")
    (tmp_path / "out.json").write_text("{}")
    with job_run("refine", {}, experiment(tmp_path.name)) as run:
        log_input(tmp_path / "in", "patch_scores")
        log_output("out.json", "refined")
    logged = run_items(store.get_run(run.info.run_id))
    assert logged == [
        Item("refined", "output", file_digest(tmp_path / "out.json"), "out.json"),
        Item("patch_scores", "input", digest_path(tmp_path / "in"), "in"),
    ]


def test_parent_run_gets_headline_metrics_tags_and_shared_inputs(store: Any, tmp_path: Path) -> None:
    (tmp_path / "prepared").mkdir()
    (tmp_path / "prepared" / "meta.json").write_text("{}")
    with job_run("evaluate", {}, experiment(tmp_path.name)) as run:
        log_input(tmp_path / "prepared", "prepared/demo")
        log_experiment_metrics(headline({"mIoU": 0.4125, "pixel_accuracy": 0.75}), {"protocol": "default"})
    parent = store.get_run(store.get_run(run.info.run_id).data.tags["mlflow.parentRunId"])
    assert parent.data.metrics == {"mIoU": 41.25, "pixel_accuracy": 75.0}
    assert parent.data.tags["usseg.protocol"] == "default" and parent.data.tags["usseg.method"] == "kmeans"
    assert parent.data.tags[CURRENT] == "true" and parent.data.params == {"kmeans.k": "3"}
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["prepared/demo"]


def test_artifacts_live_under_the_working_directory(store: Any, tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(b"png")
    with job_run("evaluate", {}, experiment(tmp_path.name)) as run:
        log_figure(tmp_path / "p.png")
    uri = store.get_run(run.info.run_id).info.artifact_uri
    assert uri == f"{ARTIFACT_ROOT}/{run.info.run_id}/artifacts"
    assert (tmp_path / uri / "pictures" / "p.png").read_bytes() == b"png"


def test_trace_without_a_store_says_so_and_creates_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert main(["trace", "km"]) == 2
    assert not (tmp_path / "results").exists()


def test_trace_follows_digests_and_names_a_changed_file(
    store: Any, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from usseg.tracking.trace import trace

    name = tmp_path.name
    (tmp_path / "refined").mkdir()
    (tmp_path / "refined" / "a.png").write_bytes(b"labels")
    with job_run("refine", {}, experiment(name)) as producer:
        log_output("refined", "refined")
    with job_run("evaluate", {}, experiment(name)) as consumer:
        log_input("refined", "labels")
        log_experiment_metrics({"mIoU": 41.25}, {"protocol": "default"})
        log_metrics({"mIoU": 41.25})
    record = tmp_path / "results/.experiments" / f"{name}.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps(experiment(name)))
    tracer = trace(name)
    assert tracer.broken == [] and tracer.checked == 2
    assert tracer.lines[0].startswith(f"{name}: mIoU = 41.25 %")
    assert tracer.lines[3].endswith(f"<- refine run {producer.info.run_id}")

    (tmp_path / "refined" / "a.png").write_bytes(b"other")
    assert main(["trace", name]) == 2
    err = capsys.readouterr().err
    assert f"broken link: refined (input 'labels' of evaluate run {consumer.info.run_id}) has digest" in err
