"""Job records: what a tracked job did, written as files and later replayed into MLflow.

Importing MLflow and opening its store costs a job ~6 s on 2 cores, more than most
stages compute on a small dataset. A job therefore only writes a record (its tags,
params, logged inputs and outputs with digests, metrics, pictures, final status); the
records are replayed into MLflow by `usseg.tracking.sync`: at the job's end by default
(``USSEG_TRACKING_SYNC=job``, a CLI run alone), once per workflow run under Snakemake
(``end``: the Snakefile's ``onsuccess`` / ``onerror``), and by `usseg sync-runs` and every
reader of the runs (`usseg trace`, the datus2 benchmark) before they read.

A record is written at the job's start with status RUNNING and rewritten atomically at
its end, so a job killed with SIGKILL still leaves a record (replayed as KILLED).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

JOURNAL = Path("results/.mlflow-journal")  # relative to the workflow root, like the store
WORKSPACE_FILE = Path("results/.workspace-id")  # this checkout's id, on every run it logs
RECORD = "record.json"
SYNC_ENV = "USSEG_TRACKING_SYNC"  # "job" (default): each job replays its own record; "end": the workflow does


def now_ms() -> int:
    return int(time.time() * 1000)


def workspace_id() -> str:
    """This checkout's id (made once, kept in ``results/``).

    Two checkouts may log to one MLflow store (a tracking server): parent runs and
    `usseg trace` only follow the runs of their own checkout, whose files they can check.
    """
    try:
        return WORKSPACE_FILE.read_text().strip()
    except FileNotFoundError:
        pass
    WORKSPACE_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        with WORKSPACE_FILE.open("x") as fh:  # the first process to get here names the checkout
            fh.write(uuid.uuid4().hex + "\n")
    except FileExistsError:
        pass
    return WORKSPACE_FILE.read_text().strip()


def sync_each_job() -> bool:
    mode = os.environ.get(SYNC_ENV, "job")
    if mode not in ("job", "end"):
        raise ValueError(f"{SYNC_ENV}={mode!r}: expected 'job' or 'end'")
    return mode == "job"


@dataclass
class JobRecord:
    """One job run as it will appear in MLflow; ``run_id`` is set once it has been replayed."""

    job: str
    uri: str
    tags: dict[str, str]
    params: dict[str, str]
    experiment: dict[str, Any] | None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = "RUNNING"
    start_ms: int = field(default_factory=now_ms)
    end_ms: int | None = None
    host: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)
    inputs: list[dict[str, str]] = field(default_factory=list)  # name, digest, path, context
    metrics: list[dict[str, Any]] = field(default_factory=list)  # values, step, ms
    experiment_metrics: list[dict[str, Any]] = field(default_factory=list)  # metrics, tags, ms
    figures: list[dict[str, str]] = field(default_factory=list)  # file (in the record's folder), artifact_dir
    run_id: str | None = None

    @property
    def folder(self) -> Path:
        return JOURNAL / self.id

    def save(self) -> None:
        """Write the record atomically (a reader never sees half of it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{RECORD}.{os.getpid()}"
        tmp.write_text(json.dumps(asdict(self)))
        os.replace(tmp, self.folder / RECORD)

    def keep_figure(self, path: Path, artifact_dir: str) -> None:
        """Copy the picture now: the file may be rewritten before the record is replayed."""
        target = self.folder / "files" / str(len(self.figures)) / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        self.figures.append({"file": str(target.relative_to(self.folder)), "artifact_dir": artifact_dir})

    def alive(self) -> bool:
        """Whether the job that writes this record may still be running (same host, pid alive)."""
        if self.status != "RUNNING" or self.host != socket.gethostname() or self.pid <= 0:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def load(folder: Path) -> JobRecord | None:
    """The record in ``folder``, or None while it is not yet written."""
    path = folder / RECORD
    if not path.is_file():
        return None
    return JobRecord(**json.loads(path.read_text()))


def pending() -> list[JobRecord]:
    """Records not yet replayed, oldest end first; those of jobs still running are left out."""
    if not JOURNAL.is_dir():
        return []
    records = [r for f in JOURNAL.iterdir() if f.is_dir() and (r := load(f)) is not None and not r.alive()]
    return sorted(records, key=lambda r: (r.end_ms or r.start_ms, r.start_ms))
