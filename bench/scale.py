"""Does every stage scale linearly in time and stay flat in memory? Measured in one run.

    python bench/scale.py                 # N = 8 and 4N = 32 demo images, every branch
    python bench/scale.py --n 16 --factor 4 --keep /tmp/scale
    python bench/scale.py --n 64 --branches context_aware   # one branch at a larger N

Generates the `demo` split at N and factor x N images, saves a seeded random ViT-S/14
(timm safetensors, as tests/conftest.py does), then runs every stage of every branch
(kmeans, multilevel, datus2, context_aware with a tiny ResNet-18) as its own `usseg`
subprocess, exactly as the Snakemake rules call it. Per stage it records wall seconds
per image and the peak RSS of that process and its children (``os.wait4``), and prints
both sizes and their ratios. The goal: factor x the images -> at most 1.1 x the peak
RSS and at most 1.1 x factor the time.

Fixed start-up costs (Python, torch, MLflow, model construction) are paid once per
process whatever N, so at small N the time ratio looks better than linear and the RSS
ratio is dominated by the interpreter; the "RSS +MB" column (4N minus N) is the part
that grows with the split. MLflow logs to a temporary sqlite file, never results/.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
USSEG = [sys.executable, "-m", "usseg.cli"]
TIME_GOAL, RSS_GOAL = 1.1, 1.1


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float


def run(args: list[str], env: dict[str, str], log: Path) -> Measure | None:
    """Run one stage; wall seconds and the peak RSS of it and its waited-for children (None: it failed)."""
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ usseg {' '.join(args)}\n")
        fh.flush()
        proc = subprocess.Popen([*USSEG, *args], env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        return None
    return Measure(seconds, usage.ru_maxrss / 1024.0)


def random_vits14(path: Path) -> Path:
    """A seeded random DINOv2 ViT-S/14 in timm keys: no download, same cost as the real one."""
    import timm
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch14_dinov2", pretrained=False, img_size=518)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def groups(image_size: int) -> dict[str, dict[str, Any]]:
    """params.yaml's groups with the bench's small, CPU-sized overrides."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    over = {
        "features": {"image_size": image_size, "batch_size": 8, "device": "cpu"},
        "kmeans": {"nredo": 1},
        "multilevel": {"nredo": 1, "label": {**params["multilevel"]["label"], "embedding": "attention"}},
        "datus2": {
            "center": True,
            "tau": 2,
            "crop_resize": 128,
            "crop_size": 112,
            "batch_size": 16,
            "device": "cpu",
            "epochs": 5,
        },
        "context_aware": {
            "arch": "resnet18",
            "image_size": 64,
            "epochs": 1,
            "batch_size": 8,
            "cluster_batch_size": 8,
            "cluster_init_batches": 2,
            "workers": 0,
            "device": "cpu",
            "amp": False,
        },
        "refine": {"crf": "stego", "device": "cpu"},
    }
    return {g: {**params[g], **over.get(g, {})} for g in ("features", *over)}


def stages(
    root: Path, n: int, weights: Path, p: dict[str, dict[str, Any]]
) -> dict[str, list[tuple[str, list[str]]]]:
    """Per branch, its (stage name, usseg arguments) in run order, for a split of ``n`` images."""
    ds, feats = root / "prepared", root / "features.zarr"
    demo = {
        "adapter": "demo",
        "split": "val",
        "seed": 0,
        "min_side": 90,
        "max_side": 130,
        "splits": {"val": n},
    }
    js = json.dumps
    common = ["--dataset-dir", str(ds)]
    features = {**p["features"], "split": "val"}
    out = {
        "shared": [
            ("prepare", ["prepare", "--dataset", "demo", "--out", str(ds), "--params", js(demo)]),
            (
                "features",
                [
                    "features",
                    *common,
                    "--backbone",
                    "dinov2_vits14",
                    "--weights",
                    str(weights),
                    "--out",
                    str(feats),
                    "--threads",
                    "1",
                    "--params",
                    js(features),
                ],
            ),
        ],
    }

    def refine(method: str) -> tuple[str, list[str]]:
        return (
            "refine",
            [
                "refine",
                "--scores",
                str(root / method / "patch_scores.zarr"),
                *common,
                "--split",
                "val",
                "--out",
                str(root / method / "refined"),
                "--threads",
                "1",
                "--params",
                js(p["refine"]),
            ],
        )

    out["kmeans"] = [
        (
            "kmeans",
            [
                "kmeans",
                "--features",
                str(feats),
                *common,
                "--out",
                str(root / "kmeans" / "patch_scores.zarr"),
                "--params",
                js(p["kmeans"]),
            ],
        ),
        refine("kmeans"),
    ]
    ml, levels = p["multilevel"], root / "multilevel" / "levels"
    level_stores = [arg for lv in ("dataset", "category", "image")
                    for arg in (f"--{lv}-level", str(levels / f"{lv}.zarr"))]  # fmt: skip
    out["multilevel"] = [
        *[
            (
                f"level {lv}",
                [
                    "multilevel-level",
                    "--level",
                    lv,
                    "--features",
                    str(feats),
                    *common,
                    "--out",
                    str(levels / f"{lv}.zarr"),
                    "--params",
                    js(ml),
                ],
            )
            for lv in ("dataset", "category", "image")
        ],
        (
            "consistency",
            [
                "multilevel-consistency",
                *level_stores,
                "--out",
                str(root / "multilevel" / "patch_scores.zarr"),
                "--mask-out",
                str(levels / "consistent.zarr"),
                "--params",
                js(ml),
            ],
        ),
        refine("multilevel"),
        (
            "label",
            [
                "multilevel-label",
                "--refined",
                str(root / "multilevel" / "refined"),
                "--features",
                str(feats),
                *common,
                "--split",
                "val",
                *level_stores,
                "--consistent-level",
                str(levels / "consistent.zarr"),
                "--backbone",
                "dinov2_vits14",
                "--out",
                str(root / "multilevel" / "labels"),
                "--fg-iou",
                str(root / "multilevel" / "fg.json"),
                "--panels",
                str(root / "multilevel" / "panels"),
                "--pictures",
                "1",
                "--params",
                js(ml),
            ],
        ),
    ]
    d2, d = p["datus2"], root / "datus2"
    out["datus2"] = [
        (
            "segments",
            [
                "datus2-segments",
                "--features",
                str(feats),
                "--out",
                str(d / "segments.zarr"),
                "--params",
                js(d2),
            ],
        ),
        (
            "segment features",
            [
                "datus2-segment-features",
                "--segments",
                str(d / "segments.zarr"),
                *common,
                "--split",
                "val",
                "--backbone",
                "dinov2_vits14",
                "--weights",
                str(weights),
                "--out",
                str(d / "segment_features.zarr"),
                "--threads",
                "1",
                "--params",
                js(d2),
            ],
        ),
        (
            "pseudolabels",
            [
                "datus2-pseudolabels",
                "--segment-features",
                str(d / "segment_features.zarr"),
                *common,
                "--out",
                str(d / "pseudolabels.zarr"),
                "--params",
                js(d2),
            ],
        ),
        (
            "masks",
            [
                "datus2-masks",
                "--segments",
                str(d / "segments.zarr"),
                "--pseudolabels",
                str(d / "pseudolabels.zarr"),
                *common,
                "--split",
                "val",
                "--out",
                str(d / "patch_scores.zarr"),
                "--pictures-dir",
                str(d / "pictures"),
                "--pictures",
                "1",
                "--params",
                js(d2),
            ],
        ),
        refine("datus2"),
    ]
    ca, c = p["context_aware"], root / "context_aware"
    out["context_aware"] = [
        (
            "train",
            ["context-aware-train", *common, "--split", "val", "--out", str(c / "model"), "--params", js(ca)],
        ),
        (
            "predict",
            [
                "context-aware-predict",
                "--model",
                str(c / "model"),
                *common,
                "--split",
                "val",
                "--out",
                str(c / "patch_scores.zarr"),
                "--params",
                js(ca),
            ],
        ),
        refine("context_aware"),
    ]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=8, help="images of the small split")
    ap.add_argument("--factor", type=int, default=4, help="the large split has factor x n images")
    ap.add_argument("--image-size", type=int, default=112, help="features.image_size")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder, deleted)")
    ap.add_argument("--branches", default="kmeans,multilevel,datus2,context_aware",
                    help="comma-separated branches to run (the shared prepare and features always run)")
    args = ap.parse_args()
    wanted = {"shared", *args.branches.split(",")}

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="usseg-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    weights = random_vits14(work / "random_vits14.safetensors")
    params = groups(args.image_size)
    sizes = (args.n, args.n * args.factor)
    measured: dict[tuple[str, str], dict[int, Measure]] = {}
    log = work / "bench.log"
    for n in sizes:
        for branch, steps in stages(work / f"n{n}", n, weights, params).items():
            if branch not in wanted:
                continue
            for stage, stage_args in steps:
                m = run(stage_args, env, log)
                if m is None:
                    print(
                        f"  n={n:<4d} {branch:<14s} {stage:<17s} FAILED (see {log}); skipping the rest of "
                        f"{branch}",
                        file=sys.stderr,
                        flush=True,
                    )
                    break
                measured.setdefault((branch, stage), {})[n] = m
                print(
                    f"  n={n:<4d} {branch:<14s} {stage:<17s} {m.seconds:7.2f} s  {m.peak_rss_mb:7.0f} MB",
                    file=sys.stderr,
                    flush=True,
                )

    small, large = sizes
    print(
        f"\nscale: N={small} -> {large} demo images ({args.image_size}px features, random ViT-S/14), "
        f"{os.cpu_count()} CPUs; goal: time ratio <= {TIME_GOAL * args.factor:.1f}, RSS ratio <= {RSS_GOAL}"
    )
    head = (
        f"| branch | stage | s/img N={small} | s/img N={large} | time ratio | peak RSS MB N={small} | "
        f"peak RSS MB N={large} | RSS ratio | RSS +MB | met |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for (branch, stage), m in measured.items():
        if len(m) < 2:
            print(f"| {branch} | {stage} | failed at one size: see the log | | | | | | | NO |")
            continue
        a, b = m[small], m[large]
        t_ratio, r_ratio = b.seconds / a.seconds, b.peak_rss_mb / a.peak_rss_mb
        met = "yes" if t_ratio <= TIME_GOAL * args.factor and r_ratio <= RSS_GOAL else "NO"
        print(
            f"| {branch} | {stage} | {a.seconds / small:.3f} | {b.seconds / large:.3f} | {t_ratio:.2f} | "
            f"{a.peak_rss_mb:.0f} | {b.peak_rss_mb:.0f} | {r_ratio:.3f} | "
            f"{b.peak_rss_mb - a.peak_rss_mb:+.0f} | "
            f"{met} |"
        )
    print(f"\nlogs: {log}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(work)


if __name__ == "__main__":
    main()
