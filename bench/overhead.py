"""Job start-up overhead: each stage's `usseg <stage>` job vs the same computation in-process.

The demo runs ~40 jobs, each a fresh Python process; what a job costs beyond its
computation (imports, parsing, the MLflow run, logging digests) is paid every time. On a
tiny input (6 images of 64 x 48 px, a 4 x 4 patch grid) the computation is small, so the
job time is almost all overhead. For each stage this prints the median wall time of the
job (a subprocess, as Snakemake runs it) and of the stage's Python function called
in-process once its imports are warm, and their ratio.

Each job is timed twice: as a CLI run alone, which logs its MLflow run itself
(``USSEG_TRACKING_SYNC=job``), and as under Snakemake, where it writes a record that the
workflow logs once at its end (``end``).

    python bench/overhead.py                 # 3 runs of each job
    python bench/overhead.py --repeat 5

The MLflow store is a temp sqlite file (MLFLOW_TRACKING_URI), created before timing.
Stages that run a ViT (features, weights) are left out: they need torch by nature.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SIZE = (48, 64)  # height, width
GRID, DIM, HEADS = (4, 4), 16, 2
EXPERIMENT = {"name": "bench", "method": "kmeans", "dataset": "tiny", "backbone": "b", "params_hash": "0"}
WARM = "warm"  # outputs of the untimed first calls: the next stage's inputs
KMEANS = {"k": 2, "niter": 5, "nredo": 1, "seed": 0, "normalize": True, "max_points": 10000}


def make_folder(root: Path, n: int = 6) -> dict[str, Any]:
    """A user's folder of images and masks (two colour halves each): the folder adapter's input."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    h, w = SIZE
    for i in range(n):
        truth = np.zeros(SIZE, np.uint8)
        truth[:, w // 2 :] = 1
        rgb = np.where(truth[..., None] == 1, [30, 160, 60], [210, 50, 40]) + rng.normal(0, 6, (h, w, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(root / "images" / f"im{i}.png")
        Image.fromarray(truth).save(root / "masks" / f"im{i}.png")
    return {"adapter": "folder", "name": "tiny", "split": "val", "classes": ["left", "right"],
            "has_background": False, "images": str(root / "images"), "masks": str(root / "masks")}


def make_features(dataset_dir: Path, out: Path) -> None:
    """A finished feature store of random patch features for the prepared images."""
    from usseg.artifacts.features import create_store, write_batch
    from usseg.artifacts.prepared import PreparedDataset

    records = PreparedDataset(dataset_dir).records("val")
    create_store(out, records, GRID, DIM, HEADS, {"grid": list(GRID), "image_size": list(SIZE)})
    rng = np.random.default_rng(0)
    n = len(records)
    patch, cls = rng.normal(size=(n, *GRID, DIM)), rng.normal(size=(n, DIM))
    write_batch(out, 0, patch, cls, rng.random((n, HEADS, *GRID)))


Stage = tuple[str, Callable[[str], Any], Callable[[str], list[str]]]


def stages(root: Path, folder: dict[str, Any]) -> list[Stage]:
    """(name, in-process computation, job arguments); both write under ``root/<tag>``.

    Each stage reads the outputs of the previous stage's untimed first call (``root/warm``).
    """
    from usseg.datasets import folder as folder_adapter
    from usseg.evaluation.params import EvaluateParams
    from usseg.evaluation.report import evaluate
    from usseg.evaluation.summary import write_summary
    from usseg.job_args import build_typed, typed_params
    from usseg.methods.kmeans.cli import run_kmeans
    from usseg.methods.kmeans.params import KMeansParams
    from usseg.refine.params import settings
    from usseg.refine.stage import refine_split

    ds, feats = root / "prepared", root / "features.zarr"
    scores, refined, report = root / WARM / "scores.zarr", root / WARM / "refined", root / WARM / "eval"
    refine = {**_params("refine"), "crf": "stego", "impl": "pydensecrf"}
    evaluation = _params("evaluate")
    exp = ["--experiment", json.dumps(EXPERIMENT)]

    def p(group: dict[str, Any]) -> list[str]:
        return ["--params", json.dumps(group)]

    def out(tag: str, name: str) -> Path:
        return root / tag / name

    folder_params = build_typed(folder_adapter.PARAMS, folder)

    return [
        ("prepare", lambda t: folder_adapter.prepare(None, out(t, "prepared"), folder_params),
         lambda t: ["prepare", "--dataset", "tiny", "--out", str(out(t, "prepared")), *p(folder)]),
        ("kmeans", lambda t: run_kmeans(feats, ds, out(t, "scores.zarr"), KMeansParams(**KMEANS)),
         lambda t: ["kmeans", "--features", str(feats), "--dataset-dir", str(ds),
                    "--out", str(out(t, "scores.zarr")), *p(KMEANS), *exp]),
        ("refine", lambda t: refine_split(scores, ds, "val", out(t, "refined"), settings(refine), 1),
         lambda t: ["refine", "--scores", str(scores), "--dataset-dir", str(ds), "--split", "val",
                    "--out", str(out(t, "refined")), *p(refine), *exp]),
        ("evaluate", lambda t: evaluate(refined, ds, "val", out(t, "eval"), out(t, "metrics.json"),
                                        typed_params(EvaluateParams, evaluation, "evaluate"), 2,
                                        {"experiment": "bench"}),
         lambda t: ["evaluate", "--labels", str(refined), "--dataset-dir", str(ds), "--split", "val",
                    "--out", str(out(t, "eval")), "--metrics", str(out(t, "metrics.json")),
                    "--pictures", "2", *p(evaluation), *exp]),
        ("summary", lambda t: write_summary([report], out(t, "summary.md"), out(t, "summary.csv")),
         lambda t: ["summary", str(report), "--out-md", str(out(t, "summary.md")),
                    "--out-csv", str(out(t, "summary.csv"))]),
    ]


def _params(group: str) -> dict[str, Any]:
    import yaml

    return yaml.safe_load((REPO / "params.yaml").read_text())[group]


def seconds(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each job and computation (median)")
    args = parser.parse_args()
    from usseg.datasets import folder as folder_adapter
    from usseg.job_args import build_typed

    with tempfile.TemporaryDirectory(prefix="usseg-overhead-") as tmp:
        root = Path(tmp)
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"
        os.chdir(root)  # artifacts of new MLflow experiments land in root/results/mlartifacts
        folder = make_folder(root / "folder")
        folder_adapter.prepare(None, root / "prepared", build_typed(folder_adapter.PARAMS, folder))
        make_features(root / "prepared", root / "features.zarr")
        usseg = Path(sys.executable).with_name("usseg")
        path = os.pathsep.join(filter(None, [str(REPO / "src"), os.getenv("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}

        def job(argv: list[str], sync: str = "job") -> None:
            proc = subprocess.run([str(usseg), *argv], env={**env, "USSEG_TRACKING_SYNC": sync},
                                  capture_output=True, text=True)  # fmt: skip
            if proc.returncode:
                sys.exit(f"usseg {' '.join(argv)} failed:\n{proc.stderr[-4000:]}")

        plan = stages(root, folder)
        kmeans_job = {name: argv for name, _, argv in plan}["kmeans"]
        job(kmeans_job("schema"))  # the first MLflow job creates the store's tables: not a per-job cost
        rows = []
        for name, compute, argv in plan:
            compute(WARM)  # warm imports and caches; also writes the input of the next stage
            inproc = [seconds(lambda i=i: compute(f"c{i}")) for i in range(args.repeat)]
            alone = [seconds(lambda i=i: job(argv(f"j{i}"))) for i in range(args.repeat)]
            workflow = [seconds(lambda i=i: job(argv(f"w{i}"), "end")) for i in range(args.repeat)]
            rows.append((name, statistics.median(alone), statistics.median(workflow), statistics.median(inproc)))
            print(f"{name}: job {rows[-1][1]:.2f} s / {rows[-1][2]:.2f} s, computation {rows[-1][3]:.3f} s",
                  file=sys.stderr)  # fmt: skip
        job(["sync-runs"])  # the records of the `end` jobs: what the workflow's end does once
    print("| stage | job, logging to MLflow itself (s) | job under Snakemake, a record (s) | computation (s) "
          "| ratio (Snakemake job / computation) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, alone_s, workflow_s, comp_s in rows:
        print(f"| {name} | {alone_s:.2f} | {workflow_s:.2f} | {comp_s:.3f} | {workflow_s / comp_s:.0f}x |")


if __name__ == "__main__":
    main()
