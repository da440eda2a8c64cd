"""End to end against a shared MLflow tracking server (the set-up for several machines)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import BIN, make_workdir, run_tool, run_workflow, tiny_params

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tracking_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`mlflow server` on 127.0.0.1 with its own sqlite store and artifact folder; always stopped."""
    port = free_port()
    artifacts = tmp_path / "server-artifacts"
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--artifacts-destination", str(artifacts), "--serve-artifacts"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(
                        f"mlflow server did not start:\n{(tmp_path / 'server.log').read_text()[-4000:]}"
                    )
                time.sleep(1)
        yield uri, artifacts
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_a_workflow_tracked_on_a_server_traces(tracking_server, tmp_path: Path, random_vits14: Path) -> None:
    import mlflow

    uri, artifacts = tracking_server
    env = {"MLFLOW_TRACKING_URI": uri}
    exp = [{"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"}]
    wf = make_workdir(tmp_path, tiny_params(random_vits14, exp))
    run_workflow(wf, env=env)
    out = run_tool(wf, "usseg", "trace", "km", env=env).stdout
    assert "every link matches" in out and "<- prepare/demo run " in out
    assert not (wf / "results/mlflow.db").exists()

    client = mlflow.MlflowClient(uri)
    assert client.get_experiment_by_name("usseg").artifact_location.startswith("mlflow-artifacts:")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("usseg").experiment_id], "tags.`usseg.kind` = 'experiment'"
    )
    metrics = json.loads((wf / "results/kmeans/km/eval/metrics.json").read_text())  # fractions
    assert parent.data.metrics["mIoU"] == pytest.approx(100 * metrics["mIoU"], abs=1e-9)
    assert parent.data.tags["usseg.current"] == "true"
    assert len(list(artifacts.rglob("confusion_default.png"))) == 1
