"""Where each job's MLflow run lives and how inputs, metrics and pictures reach it.

Parent runs are found-or-created under a file lock, because Snakemake starts jobs of one
experiment concurrently and each must nest under the same parent.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import subprocess
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from usseg.tracking.digest import digest_path

DEFAULT_URI = "sqlite:///results/mlflow.db"
SHARED_EXPERIMENT = "usseg-shared"
LOCK = Path("results/.mlflow.lock")


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
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = Path("results/mlartifacts").resolve().as_uri()
    return mlflow.create_experiment(name, artifact_location=location)


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
    run = mlflow.MlflowClient().create_run(exp_id, tags={**tags, **extra}, run_name=str(experiment["name"]))
    mlflow.MlflowClient().set_terminated(run.info.run_id, "FINISHED")
    if experiment.get("params"):
        mlflow.MlflowClient().log_batch(
            run.info.run_id,
            params=[mlflow.entities.Param(k, v[:6000]) for k, v in _flatten(experiment["params"]).items()],
        )
    return run.info.run_id


@contextlib.contextmanager
def job_run(
    job: str, params: Mapping[str, Any], experiment: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """Run the block inside an MLflow run: nested under ``experiment``'s parent, else shared.

    ``experiment`` is what the rule passes with ``--experiment``: name, method, dataset,
    backbone, params_hash (and optionally the experiment's resolved params).
    """
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    tags = {"usseg.job": job, "usseg.git_commit": git_commit(), "usseg.params_hash": params_hash(params)}
    with _lock():
        if experiment:
            name = str(experiment.get("mlflow_experiment", "usseg"))
            parent = _parent_run(mlflow, experiment, name)
            exp_id = _experiment_id(mlflow, name)
            tags["mlflow.parentRunId"] = parent
            tags["usseg.experiment"] = str(experiment["name"])
        else:
            exp_id = _experiment_id(mlflow, SHARED_EXPERIMENT)
        run = mlflow.start_run(experiment_id=exp_id, run_name=job, tags=tags)
        flat = _flatten(params)
        if flat:
            mlflow.log_params({k: v[:6000] for k, v in flat.items()})
    status = "FAILED"
    try:
        yield run
        status = "FINISHED"
    finally:
        with _lock():
            mlflow.end_run(status=status)


def log_input(path: str | Path, name: str, context: str = "input") -> str:
    """Log ``path`` as an MLflow dataset input with its content digest; return the digest."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    path = Path(path)
    digest = digest_path(path)
    with warnings.catch_warnings():
        # Two registered source classes both accept file:// URIs; they are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
        source = resolve_dataset_source(path.resolve().as_uri())
    with _lock():
        mlflow.log_input(MetaDataset(source, name=name, digest=digest[:36]), context=context)
        mlflow.set_tag(f"usseg.digest.{name}", digest)
    return digest


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    with _lock():
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_figure(path: str | Path, artifact_dir: str = "pictures") -> None:
    import mlflow

    with _lock():
        mlflow.log_artifact(str(path), artifact_path=artifact_dir)
