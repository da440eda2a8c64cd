"""`usseg trace EXPERIMENT`: follow a headline number back to the bytes and code it came from.

Every job logs its inputs and outputs with content digests (`usseg.tracking.log_input`).
The trace starts at the experiment's current parent run and its current `evaluate` run,
then, for each input, finds the run that logged the same digest as an output and recurses,
down to the prepared data and the weights. A link is broken when no finished run produced
a digest, or when the file it names no longer has that digest.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from usseg.artifacts.digest import digest_path
from usseg.errors import UssegError
from usseg.tracking.journal import workspace_id
from usseg.tracking.runs import tracking_uri
from usseg.tracking.sync import CURRENT, KIND, SHARED_EXPERIMENT, WORKSPACE, check_store, sqlite_file, sync

SHOWN = 16  # digest characters printed (the check uses all 64)


@dataclass(frozen=True)
class Item:
    """A file a run logged: its name in the run, role, full digest and path."""

    name: str
    context: str
    digest: str
    path: str


def run_items(run: Any) -> list[Item]:
    """The inputs and outputs ``run`` logged, with the full digests from its tags."""
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    items = []
    for logged in run.inputs.dataset_inputs:
        ds = logged.dataset
        context = next((t.value for t in logged.tags if t.key == MLFLOW_DATASET_CONTEXT), "input")
        path = json.loads(ds.source).get("uri", "")
        digest = run.data.tags.get(f"usseg.digest.{ds.name}", ds.digest)
        items.append(Item(ds.name, context, digest, path))
    return sorted(items, key=lambda i: (i.context != "output", i.name))


class Tracer:
    """Walks this checkout's runs of one MLflow experiment plus the shared jobs' experiment.

    Runs another checkout logged to the same store name files of that checkout: they are
    never followed (their digests would be checked against this checkout's files).
    """

    def __init__(self, client: Any, experiment_ids: list[str], workspace: str) -> None:
        self.client = client
        self.workspace = workspace
        self.runs = self._finished_runs(experiment_ids)
        self.producers: dict[str, list[Any]] = {}
        for run in self.runs:
            for item in run_items(run):
                if item.context == "output":
                    self.producers.setdefault(item.digest, []).append(run)
        self.lines: list[str] = []
        self.broken: list[str] = []
        self.seen: set[str] = set()
        self.checked = 0

    def _finished_runs(self, experiment_ids: list[str]) -> list[Any]:
        runs, token = [], None
        while True:
            query = f"attributes.status = 'FINISHED' and tags.`{WORKSPACE}` = '{self.workspace}'"
            page = self.client.search_runs(experiment_ids, query, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def producer(self, digest: str) -> Any | None:
        """The run that wrote ``digest``: the current one, else the newest."""
        runs = self.producers.get(digest, [])
        ranked = sorted(runs, key=lambda r: (r.data.tags.get(CURRENT) == "true", r.info.start_time))
        return ranked[-1] if ranked else None

    def check_file(self, item: Item, run: Any) -> str:
        """'ok', or a description of why the file no longer matches (recorded as broken)."""
        self.checked += 1
        path = Path(item.path)
        job = run.data.tags.get("usseg.job", run.info.run_name)
        if not path.exists():
            problem = f"{item.path} ({item.context} {item.name!r} of {job} run {run.info.run_id}) is missing"
        else:
            actual = digest_path(path)
            if actual == item.digest:
                return "ok"
            problem = (f"{item.path} ({item.context} {item.name!r} of {job} run {run.info.run_id}) has digest"
                       f" {actual[:SHOWN]}, the run logged {item.digest[:SHOWN]}")  # fmt: skip
        self.broken.append(problem)
        return "BROKEN: " + problem

    def walk(self, run: Any, depth: int) -> None:
        pad = "  " * depth
        tags = run.data.tags
        self.lines.append(f"{pad}{tags.get('usseg.job', run.info.run_name)}  run {run.info.run_id}"
                          f"  commit {tags.get('usseg.git_commit', '?')}"
                          f"  params {tags.get('usseg.params_hash', '?')} ({len(run.data.params)} logged)")  # fmt: skip
        self.seen.add(run.info.run_id)
        for item in run_items(run):
            state = self.check_file(item, run)
            line = (
                f"{pad}  {item.context:<8} {item.name:<24} {item.path}  sha256 {item.digest[:SHOWN]}  {state}"
            )
            if item.context != "input":
                self.lines.append(line)
                continue
            source = self.producer(item.digest)
            if source is None:
                job = tags.get("usseg.job", run.info.run_name)
                problem = (f"input {item.name!r} ({item.path}, sha256 {item.digest[:SHOWN]}) of {job} run"
                           f" {run.info.run_id}: no finished run logged this digest as an output")  # fmt: skip
                self.broken.append(problem)
                self.lines.append(f"{line}  <- BROKEN: no run produced it")
                continue
            self.lines.append(f"{line}  <- {source.data.tags.get('usseg.job')} run {source.info.run_id}")
            if source.info.run_id in self.seen:
                continue
            self.walk(source, depth + 2)


def _one(client: Any, exp_id: str, query: str, what: str) -> Any:
    runs = client.search_runs([exp_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        raise UssegError(what)
    return runs[0]


def mlflow_experiment_name(experiment: str) -> str:
    """The MLflow experiment that holds ``experiment``'s runs, from its experiment record."""
    record = Path("results/.experiments") / f"{experiment}.json"
    if record.is_file():
        return str(json.loads(record.read_text()).get("mlflow_experiment", "usseg"))
    return "usseg"


def trace(experiment: str, metric: str = "mIoU") -> Tracer:
    """Walk ``experiment``'s ``metric`` back; the tracer holds the lines and broken links (first first)."""
    import mlflow

    sync()  # jobs of a workflow run may still be records
    uri = tracking_uri()
    if (db := sqlite_file(uri)) is not None and not db.is_file():
        raise UssegError(f"trace {experiment}: no MLflow store at {uri} (run from the workflow root,"
                         " or set MLFLOW_TRACKING_URI)")  # fmt: skip
    check_store(uri)
    client = mlflow.MlflowClient(uri)
    workspace = workspace_id()
    name = mlflow_experiment_name(experiment)
    found = client.get_experiment_by_name(name)
    if found is None:
        raise UssegError(f"trace {experiment}: MLflow experiment {name!r} not found in {uri}")
    exp_id = found.experiment_id
    tag = f"tags.`usseg.experiment` = '{experiment}' and tags.`{WORKSPACE}` = '{workspace}'"
    parent = _one(
        client,
        exp_id,
        f"{tag} and tags.`{KIND}` = 'experiment' and tags.`{CURRENT}` = 'true'",
        f"trace {experiment}: no scored parent run of this checkout (results/.workspace-id {workspace}) in "
        f"MLflow experiment {name!r} (has it been evaluated here?)",
    )
    evaluate = _one(client, exp_id, f"{tag} and tags.`usseg.job` = 'evaluate' and tags.`{CURRENT}` = 'true'"
                    f" and tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                    f"trace {experiment}: parent run {parent.info.run_id} has no current evaluate run")  # fmt: skip
    if metric not in parent.data.metrics:
        raise UssegError(f"trace {experiment}: metric {metric!r} is not on parent run {parent.info.run_id}"
                         f" (it has {sorted(parent.data.metrics)})")  # fmt: skip
    value = parent.data.metrics[metric]
    shared = client.get_experiment_by_name(SHARED_EXPERIMENT)
    tracer = Tracer(client, [exp_id] + ([shared.experiment_id] if shared else []), workspace)
    ptags = parent.data.tags
    tracer.lines.append(
        f"{experiment}: {metric} = {value:.2f} %  ({ptags.get('usseg.method')} on {ptags.get('usseg.dataset')},"
        f" {ptags.get('usseg.backbone')}; protocol {ptags.get('usseg.protocol')}, {ptags.get('usseg.matching')}"
        f" matching, crf {ptags.get('usseg.crf')}, split {ptags.get('usseg.split')})"
        + (f"; inputs {ptags['usseg.inputs']}: the number is meaningless" if "usseg.inputs" in ptags else "")
    )
    tracer.lines.append(f"parent run {parent.info.run_id}  commit {ptags.get('usseg.git_commit')}"
                        f"  params {ptags.get('usseg.params_hash')} ({len(parent.data.params)} logged)")  # fmt: skip
    if evaluate.data.metrics.get(metric) != value:
        tracer.broken.append(f"{metric} {value} of parent run {parent.info.run_id} is not the"
                             f" {evaluate.data.metrics.get(metric)} of its evaluate run {evaluate.info.run_id}")  # fmt: skip
    tracer.walk(evaluate, 1)
    return tracer


def _trace(args: argparse.Namespace) -> None:
    tracer = trace(args.experiment, args.metric)
    print("\n".join(tracer.lines))
    broken = tracer.broken
    if broken:
        more = f" (and {len(broken) - 1} more)" if len(broken) > 1 else ""
        raise UssegError(f"trace {args.experiment}: broken link: {broken[0]}{more}")
    print(f"{args.experiment}: every link matches ({tracer.checked} files checked against their digests)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trace", help="follow an experiment's metric back to its data, weights, code and params"
    )
    p.add_argument("experiment", help="experiment name (params.yaml `experiments`)")
    p.add_argument("--metric", default="mIoU", help="headline metric on the parent run (in %%)")
    p.set_defaults(func=_trace)
