"""Where each job's MLflow run lives and how inputs, outputs, metrics and pictures reach it.

Parent runs are found-or-created under a file lock, because Snakemake starts jobs of one
experiment concurrently and each must nest under the same parent. A job run ends FINISHED,
FAILED (an exception) or KILLED (SIGINT/SIGTERM); the newest FINISHED run of each
(experiment, job) carries ``usseg.current=true``, older ones ``false``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from usseg.tracking.digest import digest_path

DEFAULT_URI = "sqlite:///results/mlflow.db"
# Relative to the working directory (the workflow root), so a copied or moved repository
# serves its own files: MLflow resolves a relative local artifact URI against the cwd.
ARTIFACT_ROOT = "results/mlartifacts"
SHARED_EXPERIMENT = "usseg-shared"
LOCK = Path("results/.mlflow.lock")
CURRENT = "usseg.current"
KIND = "usseg.kind"  # "experiment" (a parent run) or "job"
CONTEXTS = ("input", "output", "external")  # external: made outside the workflow (trace checks bytes only)
# Inputs the experiment's parent run also lists: the shared artifacts it was computed from
# (data, weights, feature stores, and the shared steps of workflow/rules/common.smk's SHARED).
SHARED_INPUTS = ("prepared", "weights", "features", "segments", "pseudolabels", "level")

_parent_id: str | None = None  # the parent run of the job run now open (None for shared jobs)


class JobKilled(BaseException):
    """SIGTERM reached a tracked job: unwinds it so its run ends KILLED."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def git_commit() -> str:
    """The commit the code ran at, with a `-dirty` mark when the tree has changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def params_hash(params: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()[:16]


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _experiment_id(mlflow: Any, name: str) -> str:
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    # A server with --serve-artifacts picks its own `mlflow-artifacts:` location.
    exp_id = mlflow.create_experiment(name)
    if tracking_uri().startswith("sqlite:///"):
        _relative_artifact_root(exp_id)
    return exp_id


def _relative_artifact_root(exp_id: str) -> None:
    """Point a new experiment's artifacts at ARTIFACT_ROOT, relative to the workflow root.

    MLflow turns every local artifact location into an absolute path, which makes a copied
    repository's UI serve the original's files; runs inherit the location at creation, so
    it is rewritten before the experiment's first run.
    """
    import sqlite3

    db = tracking_uri().removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con, con:
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
            (ARTIFACT_ROOT, int(exp_id)),
        )


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, list | tuple) else str(value)
    return flat


def _parent_run(mlflow: Any, experiment: Mapping[str, Any], mlflow_experiment: str) -> str:
    """The run id of the experiment's parent run for this (name, params hash, commit)."""
    exp_id = _experiment_id(mlflow, mlflow_experiment)
    tags = {
        "usseg.experiment": str(experiment["name"]),
        "usseg.params_hash": str(experiment.get("params_hash", "")),
        "usseg.git_commit": git_commit(),
    }
    query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    runs = mlflow.search_runs([exp_id], filter_string=query, max_results=1, output_format="list")
    if runs:
        return runs[0].info.run_id
    keys = ("method", "dataset", "backbone", "seed_group")
    extra = {f"usseg.{k}": str(experiment[k]) for k in keys if k in experiment}
    client = mlflow.MlflowClient()
    run = client.create_run(
        exp_id, tags={**tags, **extra, KIND: "experiment", CURRENT: "false"}, run_name=str(experiment["name"])
    )
    client.set_terminated(run.info.run_id, "FINISHED")
    if experiment.get("params"):
        client.log_batch(
            run.info.run_id,
            params=[mlflow.entities.Param(k, v[:6000]) for k, v in _flatten(experiment["params"]).items()],
        )
    return run.info.run_id


def _mark_current(client: Any, run: Any) -> None:
    """Tag ``run`` current and every other run of its (experiment, job or kind) not current."""
    tags = run.data.tags
    keys = ["usseg.experiment", "usseg.job", KIND]
    query = " and ".join(f"tags.`{k}` = '{tags[k]}'" for k in keys if k in tags)
    for other in client.search_runs([run.info.experiment_id], f"{query} and tags.`{CURRENT}` = 'true'"):
        if other.info.run_id != run.info.run_id:
            client.set_tag(other.info.run_id, CURRENT, "false")
    client.set_tag(run.info.run_id, CURRENT, "true")


@contextlib.contextmanager
def _killed_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into JobKilled while the block runs (SIGINT already raises KeyboardInterrupt)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise JobKilled(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT/SIGTERM while a run is being ended, so it never stays RUNNING."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    blocked = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)


@contextlib.contextmanager
def job_run(
    job: str, params: Mapping[str, Any], experiment: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """Run the block inside an MLflow run: nested under ``experiment``'s parent, else shared.

    ``experiment`` is what the rule passes with ``--experiment``: name, method, dataset,
    backbone, params_hash (and optionally the experiment's resolved params).
    """
    import mlflow

    global _parent_id
    mlflow.set_tracking_uri(tracking_uri())
    tags = {
        "usseg.job": job, "usseg.git_commit": git_commit(), "usseg.params_hash": params_hash(params),
        KIND: "job", CURRENT: "false",
    }  # fmt: skip
    with _killed_on_sigterm():
        with _lock():
            parent = None
            if experiment:
                name = str(experiment.get("mlflow_experiment", "usseg"))
                parent = _parent_run(mlflow, experiment, name)
                exp_id = _experiment_id(mlflow, name)
                tags["mlflow.parentRunId"] = parent
                tags["usseg.experiment"] = str(experiment["name"])
            else:
                exp_id = _experiment_id(mlflow, SHARED_EXPERIMENT)
            run = mlflow.start_run(experiment_id=exp_id, run_name=job, tags=tags)
        status = "FAILED"
        try:
            _parent_id = parent
            flat = _flatten(params)
            if flat:
                with _lock():
                    mlflow.log_params({k: v[:6000] for k, v in flat.items()})
            yield run
            status = "FINISHED"
        except (KeyboardInterrupt, JobKilled):
            status = "KILLED"
            raise
        finally:
            _parent_id = None
            with _signals_held(), _lock():
                mlflow.end_run(status=status)
                client = mlflow.MlflowClient()
                if status == "FINISHED":
                    _mark_current(client, client.get_run(run.info.run_id))
                if parent is not None:  # the parent spans its jobs and shows the latest job's outcome
                    client.set_terminated(parent, status, end_time=int(time.time() * 1000))


def _relative(path: Path) -> str:
    """``path`` relative to the workflow root when inside it, so the record survives a move."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def _dataset_input(name: str, digest: str, path: str, context: str) -> Any:
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": path}))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])


def log_input(path: str | Path, name: str, context: str = "input") -> str:
    """Log ``path`` on the active run as a dataset with its content digest; return the digest.

    ``context`` says what the file is to the job: ``input`` (made by another job: trace
    looks for the run that logged it as output), ``output``, or ``external`` (from outside
    the workflow, e.g. a downloaded checkpoint). The full digest goes in tag
    ``usseg.digest.<name>`` (MLflow keeps 36 characters of a dataset's digest).
    """
    import mlflow

    if context not in CONTEXTS:
        raise ValueError(f"context {context!r} is not one of {CONTEXTS}")
    digest = digest_path(path)
    item = _dataset_input(name, digest, _relative(Path(path)), context)
    client = mlflow.MlflowClient()
    with _lock():
        run_id = mlflow.active_run().info.run_id
        client.log_inputs(run_id, [item])
        client.set_tag(run_id, f"usseg.digest.{name}", digest)
        if _parent_id and context != "output" and name.split("/")[0] in SHARED_INPUTS:
            client.log_inputs(_parent_id, [item])
            client.set_tag(_parent_id, f"usseg.digest.{name}", digest)
    return digest


def log_output(path: str | Path, name: str) -> str:
    """Log what the job wrote (see ``log_input``); return its digest."""
    return log_input(path, name, context="output")


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    with _lock():
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_experiment_metrics(metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
    """Put the experiment's headline numbers and tags on its parent run and make it current.

    Called by the job that scores the experiment, so the runs table compares experiments.
    """
    import mlflow

    if _parent_id is None:
        raise RuntimeError("log_experiment_metrics needs a job run nested under an experiment")
    client = mlflow.MlflowClient()
    with _lock():
        now = int(time.time() * 1000)
        client.log_batch(
            _parent_id,
            metrics=[mlflow.entities.Metric(k, float(v), now, 0) for k, v in metrics.items()],
            tags=[mlflow.entities.RunTag(f"usseg.{k}", str(v)) for k, v in tags.items()],
        )
        _mark_current(client, client.get_run(_parent_id))


def log_figure(path: str | Path, artifact_dir: str = "pictures") -> None:
    import mlflow

    with _lock():
        mlflow.log_artifact(str(path), artifact_path=artifact_dir)
