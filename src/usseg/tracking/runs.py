"""The tracking API a job uses: open a job run, log inputs, outputs, metrics and pictures.

Nothing here imports MLflow: a job writes a record (`usseg.tracking.journal`) that
`usseg.tracking.sync` replays into MLflow, at the job's end or once per workflow run
(``USSEG_TRACKING_SYNC``). A job run ends FINISHED, FAILED (an exception) or KILLED
(SIGINT/SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from usseg.artifacts.digest import digest_path, params_hash
from usseg.tracking.journal import JobRecord, now_ms, sync_each_job, workspace_id
from usseg.tracking.sync import CURRENT, KIND, WORKSPACE, flatten

DEFAULT_URI = "sqlite:///results/mlflow.db"
CONTEXTS = ("input", "output", "external")  # external: made outside the workflow (trace checks bytes only)

_record: JobRecord | None = None  # the job run now open


class JobKilled(BaseException):
    """SIGTERM reached a tracked job: unwinds it so its run ends KILLED."""


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_URI)


def git_commit() -> str:
    """The commit the code ran at, with a `-dirty` mark when the tree has changes.

    Asked of the repository holding this package, not of the working directory: a workflow
    run elsewhere (`snakemake -d DIR`, a rehearsal) still runs, and records, this code.
    """
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=here,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


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
) -> Iterator[JobRecord]:
    """Run the block as a tracked job: nested under ``experiment``'s parent run, else shared.

    ``experiment`` is what the rule passes with ``--experiment``: name, method, dataset,
    backbone, params_hash (and optionally the experiment's resolved params). The record's
    ``run_id`` is set once it is in MLflow (after the block, when each job syncs itself).
    """
    global _record
    tags = {
        "usseg.job": job, "usseg.git_commit": git_commit(), "usseg.params_hash": params_hash(params),
        WORKSPACE: workspace_id(), KIND: "job", CURRENT: "false",
    }  # fmt: skip
    record = JobRecord(job, tracking_uri(), tags, flatten(params), dict(experiment) if experiment else None)
    with _killed_on_sigterm():
        record.save()
        _record = record
        try:
            yield record
            record.status = "FINISHED"
        except (KeyboardInterrupt, JobKilled):
            record.status = "KILLED"
            raise
        except BaseException:
            record.status = "FAILED"
            raise
        finally:
            _record = None
            with _signals_held():
                record.end_ms = now_ms()
                record.save()
            if sync_each_job():
                from usseg.tracking.sync import sync

                sync([record])


def _current() -> JobRecord:
    if _record is None:
        raise RuntimeError("tracking calls need an open job run (usseg.tracking.job_run)")
    return _record


def _relative(path: Path) -> str:
    """``path`` relative to the workflow root when inside it, so the record survives a move."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_posix()


def log_input(path: str | Path, name: str, context: str = "input") -> str:
    """Log ``path`` on the job run as a dataset with its content digest; return the digest.

    ``context`` says what the file is to the job: ``input`` (made by another job: trace
    looks for the run that logged it as output), ``output``, or ``external`` (from outside
    the workflow, e.g. a downloaded checkpoint). The full digest goes in tag
    ``usseg.digest.<name>`` (MLflow keeps 36 characters of a dataset's digest). Inputs
    from shared artifacts are also listed on the experiment's parent run.
    """
    if context not in CONTEXTS:
        raise ValueError(f"context {context!r} is not one of {CONTEXTS}")
    digest = digest_path(path)
    _current().inputs.append(
        {"name": name, "digest": digest, "path": _relative(Path(path)), "context": context}
    )
    return digest


def log_output(path: str | Path, name: str) -> str:
    """Log what the job wrote (see ``log_input``); return its digest."""
    return log_input(path, name, context="output")


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    _current().metrics.append(
        {"values": {k: float(v) for k, v in metrics.items()}, "step": step, "ms": now_ms()}
    )


def log_experiment_metrics(metrics: Mapping[str, float], tags: Mapping[str, Any]) -> None:
    """Put the experiment's headline numbers and tags on its parent run and make it current.

    Called by the job that scores the experiment, so the runs table compares experiments.
    """
    record = _current()
    if record.experiment is None:
        raise RuntimeError("log_experiment_metrics needs a job run nested under an experiment")
    record.experiment_metrics.append(
        {"metrics": {k: float(v) for k, v in metrics.items()}, "tags": {k: str(v) for k, v in tags.items()},
         "ms": now_ms()}
    )  # fmt: skip


def log_figure(path: str | Path, artifact_dir: str = "pictures") -> None:
    _current().keep_figure(Path(path), artifact_dir)
