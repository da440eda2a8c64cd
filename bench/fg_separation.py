"""Per-image foreground/background separation of cached features (2-way k-means).

    python bench/fg_separation.py --features results/features/voc2012_sample/dinov2_vits14_imgfocus.zarr \
        --dataset-dir data/prepared/voc2012_sample

For each image: 2-means on its L2-normalised patch features, nearest-upsampled to the
original size, scored against ground-truth foreground (any non-background class; 255
ignored). Both polarities are reported: `oracle` picks the better cluster as foreground
(an upper bound on what a polarity rule can reach), `border` uses the rule that the
cluster touching the image border more is background. Prints a per-image table and
the mean IoUs.
"""

from __future__ import annotations

import argparse

import numpy as np

from usseg.artifacts.features import open_features
from usseg.artifacts.prepared import PreparedDataset
from usseg.artifacts.upsample import upsample_labels
from usseg.methods.clustering import fit_kmeans, l2_normalize
from usseg.methods.multilevel.fgiou import truth


def iou(pred: np.ndarray, fg: np.ndarray, valid: np.ndarray) -> float:
    pred = pred & valid
    union = (pred | fg).sum()
    return float((pred & fg).sum() / union) if union else float("nan")


def border_background(labels: np.ndarray) -> int:
    """The cluster with the larger share of border patches is background."""
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    share = [np.mean(border == c) / max(np.mean(labels == c), 1e-9) for c in (0, 1)]
    return int(np.argmax(share))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True)
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    features = open_features(args.features)
    dataset = PreparedDataset(args.dataset_dir)
    records = {r.id: r for r in dataset.records(args.split)}
    gh, gw = features.sizes["y"], features.sizes["x"]
    rows = []
    for i, image_id in enumerate(features["image"].values):
        record = records[str(image_id)]
        x = l2_normalize(features["patch"].isel(image=i).values.astype(np.float32).reshape(gh * gw, -1))
        km = fit_kmeans(x, 2, niter=30, nredo=3, seed=args.seed, spherical=True)
        labels = km.index.search(x, 1)[1][:, 0].reshape(gh, gw)
        full = upsample_labels(labels.astype(np.uint8), record.height, record.width)
        fg, valid = truth(dataset.load_label(record), dataset.ignore_index)
        oracle = max(iou(full == c, fg, valid) for c in (0, 1))
        border = iou(full != border_background(labels), fg, valid)
        rows.append((str(image_id), float(fg[valid].mean()), oracle, border))
    print(f"{'image':<16} {'gt fg %':>8} {'IoU oracle':>11} {'IoU border':>11}")
    for image_id, share, oracle, border in rows:
        print(f"{image_id:<16} {100 * share:8.1f} {100 * oracle:11.1f} {100 * border:11.1f}")
    oracle_mean = np.nanmean([r[2] for r in rows])
    border_mean = np.nanmean([r[3] for r in rows])
    print(f"{'mean':<16} {'':>8} {100 * oracle_mean:11.1f} {100 * border_mean:11.1f}   ({len(rows)} images)")


if __name__ == "__main__":
    main()
