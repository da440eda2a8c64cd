"""Resume after ``kill -9``: the costly stages continue from what they wrote and end byte-identical.

Each test runs the stage's CLI as a subprocess, kills it with SIGKILL once its partial
folder shows some images done, runs it again, and compares every byte with an
uninterrupted run. A partial folder made with other parameters is discarded, not reused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from usseg.artifacts.atomic import partial_path
from usseg.artifacts.predictions import write_predictions
from usseg.datasets import demo

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    db = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "PYTHONUNBUFFERED": "1"}


def usseg(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(BIN / "usseg"), *args], env=env, cwd=cwd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def kill_when(args: list[str], env: dict[str, str], cwd: Path, ready: Callable[[], bool]) -> None:
    """Start ``usseg args`` and SIGKILL it as soon as ``ready()`` holds (checked every 10 ms).

    The whole process group is killed, as a scheduler kills a job: a worker process left
    alive would go on writing after the count the test takes.
    """
    log = cwd / f"killed-{args[0]}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([str(BIN / "usseg"), *args], env=env, cwd=cwd, stdout=err, stderr=err,
                                start_new_session=True)  # fmt: skip
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"usseg {args[0]} ended (rc {proc.returncode}) before it could be killed: "
                            f"{log.read_text()[-3000:]}")  # fmt: skip
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` by relative path, with its bytes."""
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def count(folder: Path, pattern: str) -> int:
    return len(list(folder.glob(pattern))) if folder.is_dir() else 0


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ds") / "demo"
    params = demo.DemoParams(split="val", seed=3, min_side=160, max_side=220, splits={"val": 24})
    demo.prepare(None, root, params)
    return root


def test_refine_resumes_after_kill_to_identical_maps(dataset, env, tmp_path):
    from usseg.artifacts.prepared import PreparedDataset

    records = PreparedDataset(dataset).records("val")
    rng = np.random.default_rng(0)
    scores = rng.dirichlet(np.ones(3), size=(len(records), 8, 8)).transpose(0, 3, 1, 2).astype(np.float32)
    pred = tmp_path / "patch_scores.zarr"
    write_predictions(
        pred,
        [r.id for r in records],
        [r.height for r in records],
        [r.width for r in records],
        scores=scores,
        num_labels=3,
    )
    # params.yaml's refine group (every preset: its schema), the stego CRF, probabilities kept
    refine = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["refine"]
    params = {**refine, "crf": "stego", "impl": "pydensecrf", "save_probs": True, "device": "cpu", "batch_size": 1}

    def args(out: Path, **change) -> list[str]:
        return [
            "refine",
            "--scores",
            str(pred),
            "--dataset-dir",
            str(dataset),
            "--split",
            "val",
            "--out",
            str(out),
            "--params",
            json.dumps({**params, **change}),
        ]

    usseg(args(tmp_path / "reference"), env, tmp_path)
    out = tmp_path / "refined"
    # A partial run with other settings must be discarded, not mixed in.
    kill_when(args(out, unary_clip=1e-3), env, tmp_path, lambda: count(partial_path(out), "*.png") >= 2)
    kill_when(args(out), env, tmp_path, lambda: count(partial_path(out), "*.png") >= 8)
    killed_at = count(partial_path(out), "*.png")
    assert not out.exists() and 8 <= killed_at < len(records)
    proc = usseg(args(out), env, tmp_path)
    assert f"{killed_at} of {len(records)} images already done" in proc.stderr
    assert not partial_path(out).exists()
    assert tree(out) == tree(tmp_path / "reference")


def test_datus2_segment_features_resume_after_kill_to_identical_store(dataset, env, random_vits14, tmp_path):
    from usseg.artifacts import segments as stores
    from usseg.artifacts.prepared import PreparedDataset

    records = PreparedDataset(dataset).records("val")
    grid = np.arange(16).reshape(4, 4)
    maps = np.stack([(grid + i) % 3 for i in range(len(records))])  # three segments per image
    maps[5] = -1  # an image without a valid segment
    attrs = {"image_size": [56, 56], "patch_size": 14, "tau": 0, "center": False}
    heights, widths = np.asarray([r.height for r in records]), np.asarray([r.width for r in records])
    stores.write_segments(tmp_path / "segments.zarr", [r.id for r in records], heights, widths, maps, maps, attrs)
    params = {"fill": "zero", "crop_resize": 128, "crop_size": 112, "batch_size": 4, "device": "cpu"}

    def args(out: Path, **change) -> list[str]:
        return [
            "datus2-segment-features",
            "--segments",
            str(tmp_path / "segments.zarr"),
            "--dataset-dir",
            str(dataset),
            "--split",
            "val",
            "--backbone",
            "dinov2_vits14",
            "--weights",
            str(random_vits14),
            "--out",
            str(out),
            "--threads",
            "1",
            "--params",
            json.dumps({**params, **change}),
        ]

    usseg(args(tmp_path / "reference.zarr"), env, tmp_path)
    out = tmp_path / "segment_features.zarr"
    chunks = partial_path(out) / "done" / "c"
    kill_when(args(out, fill="mean"), env, tmp_path, lambda: count(chunks, "*") >= 2)
    kill_when(args(out), env, tmp_path, lambda: count(chunks, "*") >= 4)
    killed_at = count(chunks, "*")
    assert not out.exists() and 4 <= killed_at < 17  # 23 images x 3 segments in chunks of 4
    proc = usseg(args(out), env, tmp_path)
    assert f"resuming {partial_path(out)} at segment chunk {killed_at}" in proc.stderr
    assert tree(out) == tree(tmp_path / "reference.zarr")
    sf = stores.open_segment_features(out)
    assert sf.sizes["segment"] == 69 and sf.attrs["fill"] == "zero"


def test_prepare_resumes_after_kill_to_identical_folder(env, tmp_path):
    params = {
        "adapter": "demo",
        "split": "val",
        "seed": 0,
        "min_side": 200,
        "max_side": 260,
        "splits": {"val": 30},
    }

    def args(out: Path, **change) -> list[str]:
        return [
            "prepare",
            "--dataset",
            "demo",
            "--out",
            str(out),
            "--params",
            json.dumps({**params, **change}),
        ]

    usseg(args(tmp_path / "reference"), env, tmp_path)
    out = tmp_path / "demo"
    images = partial_path(out) / "images"
    # A partial folder of another seed must be discarded, not mixed in.
    kill_when(args(out, seed=1), env, tmp_path, lambda: count(images, "*.png") >= 3)
    kill_when(args(out), env, tmp_path, lambda: count(images, "*.png") >= 6)
    assert not out.exists() and 6 <= count(images, "*.png") < 30
    proc = usseg(args(out), env, tmp_path)
    assert f"resuming {partial_path(out)}" in proc.stderr
    assert tree(out) == tree(tmp_path / "reference")
