"""Why does datus2 score below k-means on the same features? Diagnostics, not tuning.

For each datus2 experiment of a finished run, beside a k-means experiment on the same
dataset: segments per image (what Louvain left valid), the share of patches and of pixels
left unlabelled (no valid segment covers them), Hungarian mIoU over every pixel and over
the labelled ones only, per-class IoU of both, and two ceilings: the pixel accuracy of the
segments labelled by their majority ground-truth class (no segment-level labelling can beat
it) against that of the patch grid labelled the same way (what per-patch k-means could
reach). From the workflow root:

    python bench/datus2_diagnostics.py --kmeans s48-kmeans-val s48-d2-val s48-d2-res2-val
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from usseg.artifacts import segments as stores
from usseg.artifacts.prepared import IGNORE, PreparedDataset
from usseg.zarr_io import open_zarr


def _metrics(method: str, name: str) -> dict:
    return json.loads((Path("results") / method / name / "eval/metrics.json").read_text())


def segment_stats(name: str) -> dict[str, float]:
    """Segments per image and the share of patches in no valid segment, from the store it read."""
    attrs = dict(open_zarr(Path("results/datus2") / name / "patch_scores.zarr").attrs)
    segments = stores.open_segments(Path(attrs["segments"]))
    per_image = segments["num_segments"].values
    covered = (segments["segments"].values >= 0).mean()
    return {"segments_mean": float(per_image.mean()), "segments_min": int(per_image.min()),
            "segments_max": int(per_image.max()), "images_without_segment": int((per_image == 0).sum()),
            "patches_unlabelled": float(1 - covered), "tau": segments.attrs["tau"],
            "resolution": segments.attrs["resolution"], "center": segments.attrs["center"]}  # fmt: skip


def _majority_accuracy(regions: np.ndarray, label: np.ndarray) -> tuple[int, int]:
    """(pixels of their region's majority class, labelled pixels) for one image; region -1 = none."""
    keep = label != IGNORE
    correct = 0
    for r in np.unique(regions[keep & (regions >= 0)]):
        correct += int(np.bincount(label[keep & (regions == r)]).max())
    return correct, int(keep.sum())


def ceilings(name: str, dataset_dir: Path, split: str) -> tuple[float, float]:
    """Majority-class pixel accuracy of the segments, and of the patch grid, over the split."""
    attrs = dict(open_zarr(Path("results/datus2") / name / "patch_scores.zarr").attrs)
    segments = stores.open_segments(Path(attrs["segments"]))
    dataset = PreparedDataset(dataset_dir)
    by_id = {r.id: r for r in dataset.records(split)}
    seg_ok = grid_ok = total = 0
    for i, image_id in enumerate(segments["image"].values):
        record = by_id[str(image_id)]
        label = dataset.load_label(record)
        grid = segments["segments"][i].values
        gh, gw = grid.shape
        size = (record.width, record.height)
        up = np.asarray(Image.fromarray(grid.astype(np.int32)).resize(size, Image.NEAREST))
        cells = np.arange(gh * gw, dtype=np.int32).reshape(gh, gw)
        patches = np.asarray(Image.fromarray(cells).resize(size, Image.NEAREST))
        ok, n = _majority_accuracy(up, label)
        seg_ok, total = seg_ok + ok, total + n
        grid_ok += _majority_accuracy(patches, label)[0]
    return seg_ok / total, grid_ok / total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kmeans", required=True, help="the k-means experiment on the same dataset")
    parser.add_argument("datus2", nargs="+", help="datus2 experiments")
    args = parser.parse_args()
    km = _metrics("kmeans", args.kmeans)["protocols"]["default"]
    classes = km["classes"]
    print("| experiment | center / tau / resolution | segments per image (min-max) | images with none | "
          "patches unlabelled | pixels unlabelled | mIoU all pixels | mIoU labelled pixels |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.kmeans} (k-means) | - | - | - | 0 % | {100 * km['unlabelled_fraction']:.1f} % | "
          f"{100 * km['hungarian']['mIoU']:.1f} | {100 * km['hungarian']['valid_pixels']['mIoU']:.1f} |")
    per_class = {args.kmeans: km["hungarian"]["per_class_iou"]}
    ceiling_lines = ["\nCeilings (pixel accuracy, %): each segment, or each patch, labelled by its majority class:\n",
                     "| experiment | segments | patch grid | datus2's own |", "|---|---|---|---|"]
    for name in args.datus2:
        d2 = _metrics("datus2", name)["protocols"]["default"]
        s = segment_stats(name)
        print(f"| {name} | {s['center']} / {s['tau']} / {s['resolution']} | {s['segments_mean']:.1f} "
              f"({s['segments_min']}-{s['segments_max']}) | {s['images_without_segment']} | "
              f"{100 * s['patches_unlabelled']:.1f} % | {100 * d2['unlabelled_fraction']:.1f} % | "
              f"{100 * d2['hungarian']['mIoU']:.1f} | {100 * d2['hungarian']['valid_pixels']['mIoU']:.1f} |")
        per_class[name] = d2["hungarian"]["per_class_iou"]
        full = _metrics("datus2", name)
        seg, grid = ceilings(name, Path("data/prepared") / full["dataset"], full["split"])
        ceiling_lines.append(f"| {name} | {100 * seg:.1f} | {100 * grid:.1f} | "
                             f"{100 * d2['hungarian']['pixel_accuracy']:.1f} |")
    print("\n".join(ceiling_lines))
    print("\nPer-class IoU (Hungarian, all pixels; empty = class absent from the split):\n")
    print("| class | " + " | ".join(per_class) + " |")
    print("|---|" + "---|" * len(per_class))
    for i, c in enumerate(classes):
        cells = ["" if v[i] is None else f"{100 * v[i]:.1f}" for v in per_class.values()]
        if any(cells):
            print(f"| {c} | " + " | ".join(cells) + " |")
    gaps = np.array([(km_v or 0) - (d2_v or 0) for km_v, d2_v in zip(per_class[args.kmeans], per_class[args.datus2[0]],
                                                                      strict=True)])  # fmt: skip
    worst = np.argsort(-gaps)[:3]
    print(f"\nLargest k-means - {args.datus2[0]} gaps: "
          + ", ".join(f"{classes[i]} {100 * gaps[i]:+.1f}" for i in worst))


if __name__ == "__main__":
    main()
