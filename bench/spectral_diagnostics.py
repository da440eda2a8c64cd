"""Why does spectral score below k-means on the same features? Diagnostics, not tuning.

Recomputes the multi-region segments of a feature store under variants of the keys and
the parameters and scores what no clustering can fix: each segment labelled by its
majority ground-truth class (the segments' ceiling: pixel accuracy and mIoU), and the
border-chosen background segment's precision and recall against the true background.
From the workflow root, after a run that built the store:

    python bench/spectral_diagnostics.py results/features/voc48_val/dinov2_vits14_imgfocus/*.zarr \\
        data/prepared/voc48_val --split val
"""

from __future__ import annotations

import argparse
import itertools

import numpy as np
from PIL import Image

from usseg.artifacts import segments as stores
from usseg.artifacts.features import open_features
from usseg.artifacts.prepared import IGNORE, PreparedDataset
from usseg.methods.spectral.eigen import multi_region
from usseg.methods.spectral.stages import grid_image


def _upsample(regions: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    return np.asarray(Image.fromarray(regions.astype(np.int32)).resize(shape[::-1], Image.Resampling.NEAREST))


def score(features_path: str, dataset_dir: str, split: str, *, center: bool, num_segments: int,
          colour_lambda: float, images: int) -> dict[str, float]:  # fmt: skip
    """The segments' majority-label ceiling and the background segment's quality on ``images``."""
    features = open_features(features_path)
    dataset = PreparedDataset(dataset_dir)
    by_id = {r.id: r for r in dataset.records(split)}
    gh, gw = features.sizes["y"], features.sizes["x"]
    k = len(dataset.classes)
    confusion = np.zeros((k, k), np.int64)
    bg_true_in_bg = bg_pixels = true_bg = 0
    for i, image_id in enumerate(stores.ids(features["image"].values)[:images]):
        record = by_id[image_id]
        keys = np.asarray(features["patch"][i].values, np.float64).reshape(gh * gw, -1)
        if center:
            keys = keys - keys.mean(axis=0)
        image = grid_image(dataset, record, (gh, gw)) if colour_lambda > 0 else None
        result = multi_region(keys, image, (gh, gw), num_eigenvectors=20, num_segments=num_segments,
                              colour_lambda=colour_lambda, seed=0)  # fmt: skip
        truth = dataset.load_label(record)
        regions = _upsample(result.regions, truth.shape)
        valid = truth != IGNORE
        oracle = np.zeros_like(truth)
        for r in np.unique(regions):
            inside = (regions == r) & valid
            if inside.any():
                oracle[regions == r] = np.bincount(truth[inside], minlength=k).argmax()
        np.add.at(confusion, (truth[valid], oracle[valid]), 1)
        background = (regions == 0) & valid  # the official map: segment 0 is the border-chosen background
        bg_pixels += int(background.sum())
        bg_true_in_bg += int((background & (truth == 0)).sum())
        true_bg += int(((truth == 0) & valid).sum())
    iou = np.diag(confusion) / np.maximum(confusion.sum(0) + confusion.sum(1) - np.diag(confusion), 1)
    present = confusion.sum(1) > 0
    return {"ceiling_pixel_accuracy": 100 * np.trace(confusion) / confusion.sum(),
            "ceiling_mIoU": 100 * iou[present].mean(),
            "background_precision": 100 * bg_true_in_bg / max(bg_pixels, 1),
            "background_recall": 100 * bg_true_in_bg / max(true_bg, 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("features", help="a feature store (keys facet)")
    parser.add_argument("dataset_dir", help="its prepared dataset")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=1000, help="at most this many images")
    parser.add_argument("--segments", type=int, nargs="+", default=[4, 8, 15], help="num_segments values")
    parser.add_argument("--colour-lambda", type=float, nargs="+", default=[0.0, 10.0])
    args = parser.parse_args()
    print("| keys | num_segments | colour_lambda | ceiling pixel acc. | ceiling mIoU | background precision | "
          "background recall |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for center, segments, lam in itertools.product((False, True), args.segments, args.colour_lambda):
        s = score(args.features, args.dataset_dir, args.split, center=center, num_segments=segments,
                  colour_lambda=lam, images=args.images)  # fmt: skip
        print(f"| {'centred' if center else 'raw'} | {segments} | {lam:g} | {s['ceiling_pixel_accuracy']:.2f} | "
              f"{s['ceiling_mIoU']:.2f} | {s['background_precision']:.2f} | {s['background_recall']:.2f} |",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
