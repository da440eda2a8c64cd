"""context_aware at the training split's size: is peak memory flat from 2,500 to 10,000 images?

    python bench/context_aware_scale.py                       # 2,500, 5,000, 10,000 train images
    python bench/context_aware_scale.py --sizes 200,400 --keep /tmp/ca-scale

The paper preset trains on COCO-Stuff-27's curated train split (49,629 images). This
generates one synthetic training split of the largest size (320 x 320, COCO-Stuff's crop)
once, views its first N images as smaller splits (the images are shared, each split has
its own index), and per N runs, as their own subprocesses:

  loader  one pass of the training DataLoader (decode + warp) over the split
  train   `usseg context-aware-train`, one epoch of a tiny network (ResNet-18 at 64 px):
          the clustering pass (pixel k-means + PSG cell gathering and fit), the training
          pass, and the final clustering pass

Per N: CPU seconds per image (one thread), peak RSS (``os.wait4``: the process itself; workers=0, so no
DataLoader worker holds memory elsewhere), and the projection to 49,629 images (time per
image at the largest N; RSS at the largest N plus the per-image growth measured between
the two largest N). PSG keeps a seeded sample of ``psg_fit_images`` (8,192) images' cells
in memory, so RSS may grow up to that size and not beyond; that bound is printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
USSEG = [sys.executable, "-m", "usseg.cli"]
TRAIN_SPLIT = 49629
LOADER = """
import sys, time
from usseg.artifacts.prepared import PreparedDataset
from usseg.methods.context_aware.data import WarpedImages, batches
ds = PreparedDataset(sys.argv[1])
images = WarpedImages(ds, ds.records("train"), int(sys.argv[2]))
for _ in batches(images, range(len(images)), int(sys.argv[3]), 0):
    pass
"""


def measure(cmd: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """(CPU seconds, peak RSS MB, wall seconds) of one subprocess; raises when it fails.

    CPU seconds (user + system) are what the tables use: on one thread they are the work
    done whatever else shares the machine, where wall time is not."""
    start = time.perf_counter()
    with log.open("a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed: {' '.join(cmd[:4])} ... (see {log})")
    return usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0, time.perf_counter() - start


def subset(full: Path, out: Path, n: int) -> Path:
    """A prepared dataset whose `train` split is the first ``n`` images of ``full``'s."""
    out.mkdir(parents=True, exist_ok=True)
    for name in ("meta.json", "val.csv"):
        shutil.copy(full / name, out / name)
    for name in ("images", "labels"):
        if not (out / name).exists():
            (out / name).symlink_to(full / name)
    with (full / "train.csv").open(newline="") as src, (out / "train.csv").open("w", newline="") as dst:
        rows = csv.reader(src)
        writer = csv.writer(dst)
        writer.writerow(next(rows))
        for _, row in zip(range(n), rows, strict=False):
            writer.writerow(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2500,5000,10000", help="comma-separated training split sizes")
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temp folder, deleted)")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    sizes = sorted(int(n) for n in args.sizes.split(","))
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="usseg-ca-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # one thread: CPU seconds = core-seconds, comparable across N
    }
    log = work / "bench.log"
    full = work / "full"
    demo = {"adapter": "demo", "split": "val", "seed": 0, "min_side": 320, "max_side": 320,
            "splits": {"val": 8, "train": sizes[-1]}}  # fmt: skip
    if not (full / "train.csv").is_file():
        seconds, _, _ = measure([*USSEG, "prepare", "--dataset", "demo", "--out", str(full), "--params",
                              json.dumps(demo)], env, log)  # fmt: skip
        print(f"prepared {sizes[-1]} synthetic 320 x 320 training images in {seconds:.0f} s", file=sys.stderr)
    params = yaml.safe_load((REPO / "params.yaml").read_text())["context_aware"]
    params = {**params, "arch": "resnet18", "checkpoint": None, "image_size": 64, "epochs": 1, "batch_size": 32,
              "cluster_batch_size": 64, "workers": 0, "device": "cpu", "amp": False, "train_split": "train"}  # fmt: skip
    rows = {}
    for n in sizes:
        ds = subset(full, work / f"n{n}", n)
        loader = measure([sys.executable, "-c", LOADER, str(ds), str(params["image_size"]),
                          str(params["batch_size"])], env, log)  # fmt: skip
        out = work / f"model{n}"
        shutil.rmtree(out, ignore_errors=True)
        train = measure([*USSEG, "context-aware-train", "--dataset-dir", str(ds), "--split", "val", "--out",
                         str(out), "--params", json.dumps(params)], env, log)  # fmt: skip
        epoch = json.loads((out / "history.json").read_text())["epochs"][0]["seconds"]
        rows[n] = {"loader": loader, "train": train, "epoch_seconds": epoch}
        print(f"  n={n:<6d} loader {loader[0]:7.1f} CPU s {loader[1]:6.0f} MB   train {train[0]:7.1f} CPU s "
              f"{train[1]:6.0f} MB (epoch {epoch:.1f} s wall)", file=sys.stderr, flush=True)  # fmt: skip

    small, large = sizes[0], sizes[-1]
    print(f"\ncontext_aware at training size: synthetic 320 x 320 images, {params['arch']} at {params['image_size']} px, "
          f"1 epoch, batch {params['batch_size']}, workers 0, {os.cpu_count()} CPUs; psg_fit_images "
          f"{params['psg_fit_images']}, cluster_points_per_image {params['cluster_points_per_image']}")  # fmt: skip
    head = "| part | " + " | ".join(f"CPU s/img N={n}" for n in sizes) + " | " + \
        " | ".join(f"peak RSS MB N={n}" for n in sizes) + f" | RSS ratio {large}/{small} | projected to {TRAIN_SPLIT} |"  # fmt: skip
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for part in ("loader", "train"):
        secs = [rows[n][part][0] / n for n in sizes]
        rss = [rows[n][part][1] for n in sizes]
        slope = (rss[-1] - rss[-2]) / (sizes[-1] - sizes[-2]) if len(sizes) > 1 else 0.0
        projected = f"{secs[-1] * TRAIN_SPLIT / 3600:.2f} core-h, {rss[-1] + max(slope, 0.0) * (TRAIN_SPLIT - large):.0f} MB"
        print(f"| {part} | " + " | ".join(f"{s:.4f}" for s in secs) + " | " + " | ".join(f"{r:.0f}" for r in rss)
              + f" | {rss[-1] / rss[0]:.3f} | {projected} |")  # fmt: skip
    cells = sum(n * n for n in params["psg_levels"])
    bound = min(params["psg_fit_images"], large) * cells * params["dim"] * 4 / 2**20
    print(f"PSG's in-memory sample at N={large}: {bound:.0f} MB (psg_fit_images x {cells} cells x {params['dim']} "
          f"float32; constant beyond {params['psg_fit_images']} images); cell labels: {2 * cells} B per image")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"params": params, "rows": rows}, indent=1))
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
