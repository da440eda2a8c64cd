"""Does every stage scale linearly in time and stay flat in memory? Measured in one run.

    python bench/scale.py                            # N = 250, 1000, 2175 COCO-Stuff-sized images
    python bench/scale.py --sizes 8,32 --keep /tmp/scale      # a quick look
    python bench/scale.py --shape voc --backbone dinov2_vits14 --sizes 250,1000
    python bench/scale.py --json bench/results/scale.json     # for bench/cost_model.py
    python bench/scale.py --table bench/results/scale_cocostuff_vits16.json   # a saved run's table
    python bench/scale.py --table RUN.json --rss-pass PASS2.json --json RUN.json  # RSS of a second pass

Generates the `demo` split at each N with images of a real dataset's size (``--shape``:
COCO-Stuff 320 x 320 after its crop, VOC ~500 x 375, SUIM 640 x 480), saves a seeded random
ViT of the paper's architecture (``--backbone``, timm safetensors), then runs every stage
of every branch (kmeans, multilevel, datus2, context_aware with a tiny ResNet-18) as its
own `usseg` subprocess, exactly as the Snakemake rules call it. Per stage it records wall
seconds per image, the peak RSS of that process and its children (``os.wait4``) and the
bytes its outputs hold on disk, and prints every size and the ratios of the largest N to
the smallest. The goals: seconds per image at the largest N within 1.1 x the smallest, and
peak RSS at most 1.1 x (a stage that misses one is named with why in the table's notes).

Fixed start-up costs (Python, torch, MLflow, model construction) are paid once per
process whatever N, so the time ratio of a short stage is below 1; the "RSS +MB" column
(largest N minus smallest) is the part that grows with the split. CPU-sized settings
(features batch 8, datus2 crops 128 -> 112 px, context_aware ResNet-18 at 64 px, 1 epoch)
are printed with the table. MLflow logs to a temporary sqlite file, never results/.
"""

from __future__ import annotations

import argparse
import itertools
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
CRF_PROCESSES = 2  # refine with the CRF: pydensecrf worker processes (every other stage: 1 thread)
BENCH_KEYS = {"features": ["batch_size"], "datus2": ["crop_resize", "crop_size", "batch_size"],
              "context_aware": ["arch", "image_size", "epochs", "batch_size"], "refine": ["crf", "device"]}  # fmt: skip


OUTPUT_FLAGS = {"--out", "--mask-out", "--fg-iou", "--panels", "--pictures-dir"}
# (min side, max side) of the synthetic images, the features' image_size
SHAPES = {"cocostuff": (320, 320, 320), "voc": (375, 500, 448), "suim": (480, 640, 224)}


@dataclass
class Measure:
    seconds: float
    peak_rss_mb: float
    disk_mb: float = 0.0


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
    return Measure(seconds, usage.ru_maxrss / 1024.0, output_bytes(args) / 2**20)


def random_backbone(backbone: str, path: Path, env: dict[str, str]) -> Path:
    """A seeded random ViT of ``backbone``'s architecture in its release's format, with the
    rehearsal's smooth positions (a plain initialisation gives every patch the same key).

    Made in a subprocess: a bench process that imported torch would pass its RSS on to every
    stage it starts (Linux keeps the high-water mark of the forked copy across exec)."""
    code = ("import sys; from pathlib import Path; from usseg.rehearsal.checkpoints import save_release, "
            "vit_release; save_release(vit_release(sys.argv[1], seed=0), Path(sys.argv[2]))")  # fmt: skip
    subprocess.run([sys.executable, "-c", code, backbone, str(path)], env=env, check=True)
    return path


def output_bytes(args: list[str]) -> int:
    """Bytes on disk under every output path a stage's arguments name."""
    total = 0
    for flag, value in itertools.pairwise(args):
        if flag in OUTPUT_FLAGS:
            path = Path(value)
            files = [path] if path.is_file() else path.rglob("*") if path.is_dir() else []
            total += sum(f.stat().st_size for f in files if f.is_file())
    return total


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
    root: Path, n: int, weights: Path, p: dict[str, dict[str, Any]], backbone: str = "dinov2_vits14",
    shape: str = "cocostuff", crf_branches: frozenset[str] | None = None,
) -> dict[str, list[tuple[str, list[str]]]]:  # fmt: skip
    """Per branch, its (stage name, usseg arguments) in run order, for a split of ``n`` images;
    the refine stage of a branch not in ``crf_branches`` (default: all) upsamples without CRF."""
    ds, feats = root / "prepared", root / "features.zarr"
    demo = {
        "adapter": "demo",
        "split": "val",
        "seed": 0,
        "min_side": SHAPES[shape][0],
        "max_side": SHAPES[shape][1],
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
                    backbone,
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
        crf = crf_branches is None or method in crf_branches
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
                str(CRF_PROCESSES if crf else 1),
                "--params",
                js(p["refine"] if crf else {**p["refine"], "crf": "none"}),
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
                backbone,
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
                backbone,
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


def segments_per_image(path: Path) -> float | None:
    """Mean valid DatUS² segments per image of a segments store (None: the branch did not run)."""
    if not path.exists():
        return None
    from usseg.artifacts.segments import open_segments

    return float(open_segments(path)["num_segments"].values.mean())


def with_rss_of(data: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """``data`` with each stage's peak RSS from ``second``, a later run of the same settings (e.g. one
    whose times were disturbed by other work, or the first run's RSS inherited from the bench)."""
    keys = ("shape", "backbone", "image_size", "settings", "crf_branches", "crf_processes")
    if any(data[k] != second[k] for k in keys):
        raise SystemExit(f"--rss-pass: the second run differs in {[k for k in keys if data[k] != second[k]]}")
    rss = {(r["branch"], r["stage"], r["n"]): r["peak_rss_mb"] for r in second["stages"]}
    rows = [{**r, "peak_rss_mb": rss[(r["branch"], r["stage"], r["n"])], "rss_remeasured": True}
            if (r["branch"], r["stage"], r["n"]) in rss else r for r in data["stages"]]  # fmt: skip
    return {**data, "stages": rows}


def print_table(data: dict[str, Any]) -> None:
    """The scale table of one run's measurements (as ``--json`` saves them)."""
    measured: dict[tuple[str, str], dict[int, Measure]] = {}
    for row in data["stages"]:
        measured.setdefault((row["branch"], row["stage"]), {})[row["n"]] = Measure(
            row["seconds"], row["peak_rss_mb"], row["disk_mb"]
        )
    sizes = sorted({row["n"] for row in data["stages"]})
    small, large = sizes[0], sizes[-1]
    lo, hi = SHAPES[data["shape"]][:2]
    print(
        f"\nscale: N = {', '.join(map(str, sizes))} synthetic {data['shape']}-sized images ({lo}-{hi} px sides), "
        f"features at {data['image_size']} px, random {data['backbone']}, {data['cpus']} CPUs; goals at N={large} "
        f"against N={small}: s/img ratio <= {TIME_GOAL}, peak RSS ratio <= {RSS_GOAL}"
    )
    print(f"CPU-sized settings: {json.dumps(data['settings'])}; the CRF runs in the refine of: "
          f"{', '.join(data['crf_branches'])} ({data['crf_processes']} processes; the others: crf none)")  # fmt: skip
    head = ("| branch | stage | " + " | ".join(f"s/img N={n}" for n in sizes) + " | s/img ratio | "
            + " | ".join(f"peak RSS MB N={n}" for n in sizes) + f" | RSS ratio | RSS +MB | disk MB N={large} | met |")  # fmt: skip
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    notes = []
    for (branch, stage), m in measured.items():
        if small not in m or large not in m:
            print(f"| {branch} | {stage} | failed at one size: see the log |" + " |" * (2 * len(sizes) + 4))
            notes.append(f"{branch} {stage}: failed at one size (see the log)")
            continue
        a, b = m[small], m[large]
        t_ratio, r_ratio = (b.seconds / large) / (a.seconds / small), b.peak_rss_mb / a.peak_rss_mb
        met = t_ratio <= TIME_GOAL and r_ratio <= RSS_GOAL
        if not met:
            notes.append(f"{branch} {stage}: s/img ratio {t_ratio:.2f}, RSS ratio {r_ratio:.2f} "
                         f"({b.peak_rss_mb - a.peak_rss_mb:+.0f} MB)")  # fmt: skip
        secs = " | ".join(f"{m[n].seconds / n:.4f}" if n in m else "" for n in sizes)
        rss = " | ".join(f"{m[n].peak_rss_mb:.0f}" if n in m else "" for n in sizes)
        print(f"| {branch} | {stage} | {secs} | {t_ratio:.2f} | {rss} | {r_ratio:.3f} | "
              f"{b.peak_rss_mb - a.peak_rss_mb:+.0f} | {b.disk_mb:.1f} | {'yes' if met else 'NO'} |")  # fmt: skip
    print("\nmissed goals: " + ("none" if not notes else "\n  " + "\n  ".join(notes)))
    again = [f"{r['branch']} {r['stage']} N={r['n']}" for r in data["stages"] if r.get("rss_remeasured")]
    if again:
        print(f"peak RSS from a second pass (`--rss-pass`: the first run inherited the bench's RSS, or its times were kept): "
              f"{', '.join(again)}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="250,1000,2175", help="comma-separated split sizes N")
    ap.add_argument(
        "--shape", choices=sorted(SHAPES), default="cocostuff", help="synthetic images of this dataset's size"
    )
    ap.add_argument(
        "--backbone", default="dino_vits16", help="random ViT of this architecture (params.yaml backbones)"
    )
    ap.add_argument("--image-size", type=int, default=None, help="features.image_size (default: the shape's)")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder, deleted)")
    ap.add_argument(
        "--json", default=None, help="also write the measurements here (bench/cost_model.py reads it)"
    )
    ap.add_argument(
        "--branches",
        default="kmeans,multilevel,datus2,context_aware",
        help="comma-separated branches to run (the shared prepare and features always run)",
    )
    ap.add_argument("--crf-branches", default="kmeans",
                    help="branches whose refine runs the dense CRF (the others upsample only: the CRF is the "
                    "same code whatever the branch, and the longest stage per image here)")  # fmt: skip
    ap.add_argument("--table", default=None, help="only print the table of a run saved with --json")
    ap.add_argument("--rss-pass", default=None,
                    help="with --table: take every stage's peak RSS from this second run (same sizes and settings; "
                    "its times are not used), marked re-measured; --json saves the result")  # fmt: skip
    args = ap.parse_args()
    if args.table:
        data = json.loads(Path(args.table).read_text())
        if args.rss_pass:
            data = with_rss_of(data, json.loads(Path(args.rss_pass).read_text()))
            if args.json:
                Path(args.json).write_text(json.dumps(data, indent=1))
        print_table(data)
        return
    wanted = {"shared", *args.branches.split(",")}
    crf_branches = frozenset(args.crf_branches.split(","))
    sizes = sorted(int(n) for n in args.sizes.split(","))
    image_size = args.image_size or SHAPES[args.shape][2]

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="usseg-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    weights = random_backbone(args.backbone, work / f"random_{args.backbone}.pth", env)
    params = groups(image_size)
    measured: dict[tuple[str, str], dict[int, Measure]] = {}
    log = work / "bench.log"
    for n in sizes:
        plan = stages(work / f"n{n}", n, weights, params, args.backbone, args.shape, crf_branches)
        for branch, steps in plan.items():
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
                    f"  n={n:<4d} {branch:<14s} {stage:<17s} {m.seconds:7.2f} s  {m.peak_rss_mb:7.0f} MB  "
                    f"{m.disk_mb:8.1f} MB on disk",
                    file=sys.stderr,
                    flush=True,
                )

    data = {
        "shape": args.shape, "backbone": args.backbone, "image_size": image_size, "cpus": os.cpu_count(),
        "settings": {g: {k: params[g][k] for k in keys} for g, keys in BENCH_KEYS.items()},
        "crf_branches": sorted(crf_branches),
        "crf_processes": CRF_PROCESSES,
        "segments_per_image": segments_per_image(work / f"n{sizes[-1]}" / "datus2" / "segments.zarr"),
        "stages": [{"branch": br, "stage": st, "n": n, **vars(x)} for (br, st), m in measured.items()
                   for n, x in m.items()],
    }  # fmt: skip
    print_table(data)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(data, indent=1))
    print(f"\nlogs: {log}" if args.keep else "")
    if not args.keep:
        import shutil

        shutil.rmtree(work)


if __name__ == "__main__":
    main()
