"""Replay job records (`usseg.tracking.journal`) into MLflow: the only module that writes runs.

Parent runs are found-or-created per (experiment, params hash, commit). A replayed job run
keeps the job's own start and end times and ends FINISHED, FAILED or KILLED (a record
left RUNNING by a job that is gone was killed outright); the newest FINISHED run of each
(experiment, job) carries ``usseg.current=true``, older ones ``false``. Replay holds the
store's file lock and deletes each record once its run is complete, so concurrent
replays never log a job twice; a replay interrupted half-way deletes its partial run
(tag ``usseg.record``) and starts that record again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import shutil
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from usseg.artifacts.locks import file_lock
from usseg.errors import UssegError
from usseg.steps import shared_artifacts
from usseg.tracking.journal import RECORD, JobRecord, pending

log = logging.getLogger(__name__)

ARTIFACT_ROOT = "results/mlartifacts"  # relative to the workflow root: a moved copy serves its own files
SHARED_EXPERIMENT = "usseg-shared"
LOCK = Path("results/.mlflow.lock")  # for a server's store; an SQLite store's lock is beside it
CURRENT = "usseg.current"
WORKSPACE = "usseg.workspace"  # the checkout a run belongs to (journal.workspace_id)
KIND = "usseg.kind"  # "experiment" (a parent run) or "job"
RECORD_TAG = "usseg.record"
BATCH = 100  # MLflow's log_batch limit on params per call


def sqlite_file(uri: str) -> Path | None:
    """The database file of an ``sqlite:///`` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def check_store(uri: str) -> None:
    """Stop with what to do when an SQLite store exists but is no database (a bare
    SQLAlchemy traceback otherwise)."""
    path = sqlite_file(uri)
    if path is None or not path.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)) as con:
            con.execute("PRAGMA schema_version").fetchone()
    except sqlite3.DatabaseError as exc:
        raise UssegError(
            f"the MLflow store {path} is not a readable SQLite database ({exc}). Restore a copy of it, "
            f"or move it aside (mv {path} {path}.broken) and run `snakemake --forceall` to log every "
            "job again; the job records not yet logged wait in results/.mlflow-journal"
        ) from exc


@contextlib.contextmanager
def store_lock(uri: str | None = None) -> Iterator[None]:
    """Exclusive access to the store: for SQLite a lock file beside the database, which every
    checkout writing to it shares (MLflow's first migration is not safe to run twice at once)."""
    db = sqlite_file(uri) if uri else None
    lock = db.with_name(db.name + ".lock") if db is not None else LOCK
    with file_lock(lock):
        yield


# A model-training experiment (MLflow 3 otherwise takes it for GenAI), with a shared view of
# its runs table: one row per experiment (current parent runs), sorted by mIoU, with mIoU,
# pixel accuracy and the setup as columns. `usseg runs-url` prints the page that opens it.
RUNS_VIEW = "usseg-runs"
SETUP_TAGS = ("method", "dataset", "backbone", "protocol", "matching", "crf", "split")
RUNS_VIEW_STATE = {
    "searchFilter": f"tags.`{KIND}` = 'experiment' and tags.`{CURRENT}` = 'true'",
    "orderByKey": "metrics.`mIoU`",
    "orderByAsc": False,
    "selectedColumns": ["metrics.`mIoU`", "metrics.`pixel_accuracy`", *(f"tags.`usseg.{k}`" for k in SETUP_TAGS)],
}
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    f"mlflow.sharedViewState.{RUNS_VIEW}": json.dumps(RUNS_VIEW_STATE, sort_keys=True),
}


def _experiment_id(client: Any, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        for key, value in EXPERIMENT_TAGS.items():
            if found.tags.get(key) != value:  # made by an earlier version: set it once
                client.set_experiment_tag(found.experiment_id, key, value)
        return found.experiment_id
    # A server with --serve-artifacts picks its own `mlflow-artifacts:` location.
    exp_id = client.create_experiment(name, tags=EXPERIMENT_TAGS)
    if (db := sqlite_file(uri)) is not None:
        _relative_artifact_root(db, exp_id)
    return exp_id


def _relative_artifact_root(db: Path, exp_id: str) -> None:
    """Point a new experiment's artifacts at ARTIFACT_ROOT, relative to the workflow root.

    MLflow turns every local artifact location into an absolute path, which makes a copied
    repository's UI serve the original's files; runs inherit the location at creation, so
    it is rewritten before the experiment's first run.
    """
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con, con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            (ARTIFACT_ROOT, int(exp_id)),
        )


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def _params(mlflow: Any, flat: Mapping[str, str]) -> list[Any]:
    return [mlflow.entities.Param(k, v[:6000]) for k, v in flat.items()]


def _log_params(client: Any, mlflow: Any, run_id: str, flat: Mapping[str, str]) -> None:
    params = _params(mlflow, flat)
    for i in range(0, len(params), BATCH):
        client.log_batch(run_id, params=params[i : i + BATCH])


PARENT_KEY = ("usseg.experiment", "usseg.params_hash", "usseg.git_commit", WORKSPACE)


def parent_key(record: JobRecord) -> tuple[str, ...] | None:
    """The tag values (PARENT_KEY) that identify a record's parent run: experiment name,
    params hash, commit, checkout."""
    if not record.experiment:
        return None
    return (str(record.experiment["name"]), str(record.experiment.get("params_hash", "")),
            record.tags["usseg.git_commit"], record.tags.get(WORKSPACE, ""))  # fmt: skip


def _parent_run(
    client: Any, mlflow: Any, exp_id: str, experiment: Mapping[str, Any], key: tuple[str, ...], start_ms: int
) -> str:
    """The run id of the experiment's parent run for ``key`` (``parent_key``).

    A new one starts at ``start_ms`` (its first job's start) and ends there until a job's
    end extends it, so its duration is that of its jobs, never negative.
    """
    tags = dict(zip(PARENT_KEY, key, strict=True))
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = client.search_runs([exp_id], query, max_results=1)
    if runs:
        return runs[0].info.run_id
    keys = ("method", "dataset", "backbone", "seed_group")
    extra = {f"usseg.{k}": str(experiment[k]) for k in keys if k in experiment}
    inputs = (experiment.get("setup") or {}).get("inputs")
    if inputs:  # a rehearsal's run says, where the runs list shows it, that its numbers are meaningless
        extra.update({"usseg.inputs": str(inputs), "mlflow.note.content": f"Inputs: {inputs}; numbers meaningless."})
    run = client.create_run(exp_id, start_time=start_ms, run_name=str(experiment["name"]),
                            tags={**tags, **extra, KIND: "experiment", CURRENT: "false"})  # fmt: skip
    client.set_terminated(run.info.run_id, "FINISHED", end_time=start_ms)
    if experiment.get("params"):
        _log_params(client, mlflow, run.info.run_id, flatten(experiment["params"]))
    return run.info.run_id


def mark_current(client: Any, run: Any) -> None:
    """Tag ``run`` current and every other run of its (experiment, job or kind) not current."""
    tags = run.data.tags
    keys = ["usseg.experiment", "usseg.job", KIND, WORKSPACE]
    query = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in keys if k in tags)
    for other in client.search_runs([run.info.experiment_id], f"{query} and tags.`{CURRENT}` = 'true'"):
        if other.info.run_id != run.info.run_id:
            client.set_tag(other.info.run_id, CURRENT, "false")
    client.set_tag(run.info.run_id, CURRENT, "true")


def _dataset_input(mlflow: Any, item: Mapping[str, str]) -> Any:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    source = json.dumps({"uri": item["path"]})
    dataset = Dataset(name=item["name"], digest=item["digest"][:36], source_type="local", source=source)
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, item["context"])])


def _drop_partial(client: Any, exp_id: str, record: JobRecord) -> None:
    for run in client.search_runs([exp_id], f"tags.`{RECORD_TAG}` = '{record.id}'"):
        client.delete_run(run.info.run_id)


def replay(client: Any, mlflow: Any, record: JobRecord, parent_start_ms: int | None = None) -> str:
    """Log ``record`` as one MLflow run (nested under its experiment's parent); return its id.

    ``parent_start_ms``: when the parent run is new, its start (the first start among the
    jobs being replayed with it; default this job's).
    """
    experiment = record.experiment
    name = str(experiment.get("mlflow_experiment", "usseg")) if experiment else SHARED_EXPERIMENT
    exp_id = _experiment_id(client, name, record.uri)
    _drop_partial(client, exp_id, record)
    tags = {**record.tags, RECORD_TAG: record.id}
    parent = None
    if experiment and (key := parent_key(record)) is not None:
        parent = _parent_run(client, mlflow, exp_id, experiment, key, parent_start_ms or record.start_ms)
        tags.update({"mlflow.parentRunId": parent, "usseg.experiment": str(experiment["name"])})
    run_id = client.create_run(exp_id, start_time=record.start_ms, tags=tags, run_name=record.job).info.run_id
    _log_params(client, mlflow, run_id, record.params)
    if record.inputs:
        client.log_inputs(run_id, [_dataset_input(mlflow, item) for item in record.inputs])
        digests = [mlflow.entities.RunTag(f"usseg.digest.{i['name']}", i["digest"]) for i in record.inputs]
        client.log_batch(run_id, tags=digests)
        # the parent run also lists the shared artifacts it was computed from (data, weights,
        # feature stores, the methods' shared steps)
        names = shared_artifacts()
        shared = [i for i in record.inputs if i["context"] != "output" and i["name"].split("/")[0] in names]
        if parent and shared:
            client.log_inputs(parent, [_dataset_input(mlflow, item) for item in shared])
            client.log_batch(parent, tags=[mlflow.entities.RunTag(f"usseg.digest.{i['name']}", i["digest"])
                                           for i in shared])  # fmt: skip
    for logged in record.metrics:
        metrics = [mlflow.entities.Metric(k, float(v), logged["ms"], logged["step"] or 0)
                   for k, v in logged["values"].items()]  # fmt: skip
        client.log_batch(run_id, metrics=metrics)
    for headline in record.experiment_metrics:
        assert parent is not None, "experiment metrics are only recorded under an experiment"
        client.log_batch(
            parent,
            metrics=[mlflow.entities.Metric(k, float(v), headline["ms"], 0) for k, v in headline["metrics"].items()],
            tags=[mlflow.entities.RunTag(f"usseg.{k}", str(v)) for k, v in headline["tags"].items()],
        )
        mark_current(client, client.get_run(parent))
    for figure in record.figures:
        client.log_artifact(run_id, str(record.folder / figure["file"]), artifact_path=figure["artifact_dir"])
    status = "KILLED" if record.status == "RUNNING" else record.status  # its job is gone
    client.set_terminated(run_id, status, end_time=record.end_ms or record.start_ms)
    if status == "FINISHED":
        mark_current(client, client.get_run(run_id))
    if parent is not None:  # the parent spans its jobs and shows the latest job's outcome
        end = max(record.end_ms or record.start_ms, client.get_run(parent).info.end_time or 0)
        client.set_terminated(parent, status, end_time=end)
    return run_id


def sync(records: list[JobRecord] | None = None) -> list[str]:
    """Replay ``records`` (default: every pending one) into MLflow; return the new run ids."""
    todo = pending() if records is None else records
    if not todo:
        return []  # nothing to do: MLflow is not even imported
    import mlflow

    done: list[str] = []
    for uri in dict.fromkeys(r.uri for r in todo):
        check_store(uri)
        records = [r for r in todo if r.uri == uri]
        first_start: dict[tuple[str, ...], int] = {}
        for record in records:
            if (key := parent_key(record)) is not None:
                first_start[key] = min(first_start.get(key, record.start_ms), record.start_ms)
        with store_lock(uri):
            client = mlflow.MlflowClient(uri)
            for record in records:
                if not (record.folder / RECORD).is_file():
                    continue  # a concurrent replay logged it while this one waited for the lock
                key = parent_key(record)
                record.run_id = replay(client, mlflow, record, first_start.get(key) if key else None)
                shutil.rmtree(record.folder)
                done.append(record.run_id)
    if done:
        log.info("tracking: %d job runs logged to MLflow", len(done))
    return done


def _sync_runs(args: argparse.Namespace) -> None:
    print(f"sync-runs: {len(sync())} job runs logged to MLflow")


def runs_url(uri: str, name: str, base: str) -> str:
    """The MLflow UI page of experiment ``name``'s runs table in the project's shared view."""
    import mlflow

    check_store(uri)
    found = mlflow.MlflowClient(uri).get_experiment_by_name(name)
    if found is None:
        raise UssegError(f"runs-url: MLflow experiment {name!r} is not in {uri} (has a workflow run been synced?)")
    return (f"{base.rstrip('/')}/#/experiments/{found.experiment_id}/runs"
            f"?viewStateShareKey={RUNS_VIEW}&workflowType=machine_learning")


def _runs_url(args: argparse.Namespace) -> None:
    from usseg.tracking.runs import tracking_uri

    print(runs_url(tracking_uri(), args.experiment, args.base))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sync-runs", help="log the job records the workflow wrote into MLflow")
    p.set_defaults(func=_sync_runs)
    p = sub.add_parser("runs-url", help="the MLflow UI page of the runs table (one row per experiment, by mIoU)")
    p.add_argument("--experiment", default="usseg", help="MLflow experiment (params.yaml tracking.experiment)")
    p.add_argument("--base", default="http://127.0.0.1:5000", help="where `mlflow ui` serves")
    p.set_defaults(func=_runs_url)
