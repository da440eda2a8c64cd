"""The MLflow audit trail: digests, run status, the current-run mark, parent metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from usseg.artifacts.digest import digest_path, file_digest
from usseg.cli import main
from usseg.evaluation.cli import headline
from usseg.tracking import job_run, log_experiment_metrics, log_figure, log_input, log_metrics, log_output
from usseg.tracking.runs import JobKilled
from usseg.tracking.sync import ARTIFACT_ROOT, CURRENT

KMEANS = {"k": 3, "niter": 2, "nredo": 1, "seed": 0, "normalize": True, "max_points": 1000}


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
            json.dumps(KMEANS),
            "--experiment",
            str(record),
        ]
    )
    assert code == 2  # its input is missing: the run started, then failed
    assert [r.info.status for r in job_runs(store, tmp_path.name, "kmeans")] == ["FAILED"]


def test_a_cli_job_given_bad_params_stops_before_its_run(store: Any, tmp_path: Path, capsys) -> None:
    record = tmp_path / "exp.json"
    record.write_text(json.dumps(experiment(tmp_path.name)))
    argv = ["kmeans", "--features", "f.zarr", "--dataset-dir", "d", "--out", "o.zarr", "--experiment", str(record)]
    assert main([*argv, "--params", json.dumps({**KMEANS, "niter": 0})]) == 2
    assert "params kmeans.niter: 0 is less than the minimum of 1" in capsys.readouterr().err
    assert job_runs(store, tmp_path.name, "kmeans") == []


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
    logged = run_items(store.get_run(run.run_id))
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
    parent = store.get_run(store.get_run(run.run_id).data.tags["mlflow.parentRunId"])
    assert parent.data.metrics == {"mIoU": 41.25, "pixel_accuracy": 75.0}
    assert parent.data.tags["usseg.protocol"] == "default" and parent.data.tags["usseg.method"] == "kmeans"
    assert parent.data.tags[CURRENT] == "true" and parent.data.params == {"kmeans.k": "3"}
    assert [d.dataset.name for d in parent.inputs.dataset_inputs] == ["prepared/demo"]


def test_artifacts_live_under_the_working_directory(store: Any, tmp_path: Path) -> None:
    (tmp_path / "p.png").write_bytes(b"png")
    with job_run("evaluate", {}, experiment(tmp_path.name)) as run:
        log_figure(tmp_path / "p.png")
    uri = store.get_run(run.run_id).info.artifact_uri
    assert uri == f"{ARTIFACT_ROOT}/{run.run_id}/artifacts"
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
    assert tracer.lines[3].endswith(f"<- refine run {producer.run_id}")

    (tmp_path / "refined" / "a.png").write_bytes(b"other")
    assert main(["trace", name]) == 2
    err = capsys.readouterr().err
    assert f"broken link: refined (input 'labels' of evaluate run {consumer.run_id}) has digest" in err


def test_records_wait_for_one_sync_at_the_end_of_a_workflow_run(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """USSEG_TRACKING_SYNC=end (the Snakefile's): jobs only write records; `sync` logs each once."""
    from usseg.tracking.journal import JOURNAL, JobRecord
    from usseg.tracking.sync import sync

    monkeypatch.setenv("USSEG_TRACKING_SYNC", "end")
    name = tmp_path.name
    (tmp_path / "p.png").write_bytes(b"png")
    with job_run("refine", {"crf": "none"}, experiment(name)) as first:
        log_metrics({"images": 4})
        log_figure(tmp_path / "p.png")
    (tmp_path / "p.png").write_bytes(b"rewritten before the sync")
    with pytest.raises(ValueError), job_run("evaluate", {}, experiment(name)):
        raise ValueError("bad labels")
    gone = subprocess.Popen(["true"])
    gone.wait()
    # A job gone without a word (SIGKILL) leaves its start record.
    tags = {**first.tags, "usseg.job": "datus2_masks"}
    JobRecord("datus2_masks", first.uri, tags, {}, experiment(name), pid=gone.pid).save()
    assert first.run_id is None and job_runs(store, name, "refine") == []

    assert len(sync()) == 3 and sync() == [] and list(JOURNAL.iterdir()) == []
    (refine,) = job_runs(store, name, "refine")
    assert refine.data.tags["usseg.record"] == first.id
    assert (refine.info.start_time, refine.info.end_time) == (first.start_ms, first.end_ms)
    assert (refine.info.status, refine.data.tags[CURRENT], refine.data.params) == ("FINISHED", "true", {"crf": "none"})
    assert refine.data.metrics == {"images": 4.0}
    local = Path(store.download_artifacts(refine.info.run_id, "pictures/p.png", str(tmp_path / "dl")))
    assert local.read_bytes() == b"png"  # the picture as the job logged it
    assert [r.info.status for r in job_runs(store, name, "evaluate")] == ["FAILED"]
    assert [r.info.status for r in job_runs(store, name, "datus2_masks")] == ["KILLED"]


def test_a_replay_cut_short_is_replaced_not_doubled(store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from usseg.tracking.sync import sync

    monkeypatch.setenv("USSEG_TRACKING_SYNC", "end")
    with job_run("refine", {}, experiment(tmp_path.name)) as record:
        pass
    sync([record])
    record.save()  # as if the replay had died before deleting the record
    sync()
    runs = job_runs(store, tmp_path.name, "refine")
    assert [(r.data.tags["usseg.record"], r.info.status) for r in runs] == [(record.id, "FINISHED")]
    assert runs[0].info.run_id != record.run_id and store.get_run(record.run_id).info.lifecycle_stage == "deleted"


def test_a_job_under_snakemake_never_imports_mlflow(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom usseg.tracking import job_run, log_metrics\n"
        "with job_run('refine', {'k': 3}, {'name': 'e', 'params_hash': 'h'}):\n"
        "    log_metrics({'images': 1})\n"
        "print('mlflow' in sys.modules, 'sqlalchemy' in sys.modules)\n"
    )
    env = {**os.environ, "USSEG_TRACKING_SYNC": "end"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    assert out.split() == ["False", "False"]
    assert len(list((tmp_path / "results/.mlflow-journal").iterdir())) == 1


def test_a_corrupt_store_names_the_file_and_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    """A bare SQLAlchemy traceback before (#18.7)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results/mlflow.db").write_bytes(b"this is not an sqlite database" * 100)
    assert main(["trace", "km"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usseg trace: error: the MLflow store results/mlflow.db is not a readable SQLite "
                          "database (file is not a database). Restore a copy of it, or move it aside "
                          "(mv results/mlflow.db results/mlflow.db.broken)"), err


def test_two_checkouts_creating_one_store_at_once_both_succeed(tmp_path: Path) -> None:
    """MLflow's first migration raced when two checkouts shared one SQLite store: each locked
    only its own results/.mlflow.lock, and one job exited 1 (#18.8; 4 of 6 jobs failed before)."""
    db = tmp_path / "shared.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "USSEG_TRACKING_SYNC": "job"}
    params = json.dumps({"adapter": "demo", "split": "val", "seed": 0, "min_side": 40, "max_side": 50,
                         "splits": {"val": 2}})  # fmt: skip
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        procs.append(subprocess.Popen(
            [str(Path(sys.executable).parent / "usseg"), "prepare", "--dataset", "demo", "--out", "out",
             "--params", params], cwd=tmp_path / name, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))  # fmt: skip
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("usseg-shared").experiment_id])
    workspaces = {r.data.tags["usseg.workspace"] for r in runs}
    assert len(runs) == 2 and workspaces == {(tmp_path / n / "results/.workspace-id").read_text().strip()
                                             for n in ("a", "b")}  # fmt: skip


def test_a_parent_run_spans_its_jobs_in_a_model_training_experiment(
    store: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#20.3: parent runs started when they were replayed and ended at their last job's end
    (negative durations in the UI); MLflow 3 opened the experiment on its GenAI traces page."""
    import time

    from usseg.tracking.sync import EXPERIMENT_TAGS, RUNS_VIEW_STATE, runs_url, sync

    monkeypatch.setenv("USSEG_TRACKING_SYNC", "end")
    name = tmp_path.name
    with job_run("kmeans", {}, experiment(name)) as first:
        time.sleep(0.05)
    with job_run("refine", {}, experiment(name)) as second:
        time.sleep(0.05)
    # replayed later than both ran, the later-ending job first
    first.end_ms, second.end_ms = second.end_ms + 500, first.end_ms
    first.save()
    second.save()
    assert len(sync()) == 2
    exp = store.get_experiment_by_name("usseg-test")
    assert exp.tags["mlflow.experimentKind"] == EXPERIMENT_TAGS["mlflow.experimentKind"] == "custom_model_development"
    assert json.loads(exp.tags["mlflow.sharedViewState.usseg-runs"]) == RUNS_VIEW_STATE
    assert runs_url(os.environ["MLFLOW_TRACKING_URI"], "usseg-test", "http://127.0.0.1:5000") == (
        f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs?viewStateShareKey=usseg-runs"
        "&workflowType=machine_learning")
    (parent,) = store.search_runs([exp.experiment_id], f"tags.`usseg.experiment` = '{name}' and "
                                  "tags.`usseg.kind` = 'experiment'")  # fmt: skip
    assert (parent.info.start_time, parent.info.end_time) == (first.start_ms, first.end_ms)
    assert parent.info.end_time - parent.info.start_time > 500
