"""The spectral jobs of their own, each from its input artifacts to its output artifact: segments,
their clusters, the patch labels. (The crop feature per segment is DatUS²'s shared step.)"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from usseg.artifacts import segments as S
from usseg.artifacts.features import open_features
from usseg.artifacts.predictions import write_predictions
from usseg.artifacts.prepared import PreparedDataset
from usseg.errors import UssegError
from usseg.methods.spectral.params import ClusterParams, SegmentParams

log = logging.getLogger(__name__)


def grid_image(dataset: PreparedDataset, record: Any, grid: tuple[int, int]) -> np.ndarray:
    """The image resized (bilinear) to the patch grid, in [0, 1]: the colour affinity's input."""
    from PIL import Image

    gh, gw = grid
    image = Image.fromarray(dataset.load_image(record)).resize((gw, gh), Image.Resampling.BILINEAR)
    return np.asarray(image, np.float64) / 255.0


def run_segments(
    features_path: Path, dataset_dir: Path, split: str, out: Path, params: SegmentParams
) -> dict[str, float]:
    """Multi-region segments of every image of the feature store (background: no segment)."""
    from usseg.methods.spectral.eigen import foreground_segments, multi_region

    features = open_features(features_path)
    facet = features.attrs.get("facet")
    if facet != "keys":
        log.warning("%s holds the %r facet; DSM's affinity is built on last-block keys", features_path, facet)
    dataset = PreparedDataset(dataset_dir)
    image_ids = S.ids(features["image"].values)
    by_id = {r.id: r for r in dataset.records(split)}
    missing = [i for i in image_ids if i not in by_id]
    if missing:
        raise UssegError(
            f"images {missing[:5]} of {features_path} are not in split {split!r} of {dataset.root}"
        )
    n, gh, gw = features.sizes["image"], features.sizes["y"], features.sizes["x"]
    regions = np.empty((n, gh, gw), np.int32)
    segments = np.empty((n, gh, gw), np.int32)
    gaps = np.empty(n)
    start = time.perf_counter()
    for i in tqdm(range(n), desc="spectral segments", unit="img"):
        keys = np.asarray(features["patch"][i].values, np.float64).reshape(gh * gw, -1)
        image = grid_image(dataset, by_id[image_ids[i]], (gh, gw)) if params.colour_lambda > 0 else None
        result = multi_region(
            keys, image, (gh, gw), num_eigenvectors=params.num_eigenvectors, num_segments=params.num_segments,
            colour_lambda=params.colour_lambda, seed=params.seed,
        )  # fmt: skip
        regions[i], segments[i] = result.regions, foreground_segments(result.regions)
        gaps[i] = float(result.eigenvalues[2] - result.eigenvalues[1]) if len(result.eigenvalues) > 2 else 0.0
    seconds = time.perf_counter() - start
    attrs = {
        "grid": [gh, gw],
        "image_size": list(features.attrs["image_size"]),
        "patch_size": int(features.attrs["patch_size"]),
        "backbone": str(features.attrs.get("backbone", "")),
        "facet": str(facet),
        "features_digest": str(features.attrs.get("digest", "")),
        "made_by": "spectral-segments",
        **dataclasses.asdict(params),
    }
    # ``communities`` holds the official segment map (background 0), drawn in the pictures
    S.write_segments(
        out, image_ids, features["height"].values, features["width"].values, segments, regions, attrs
    )
    per_image = segments.max(axis=(1, 2)) + 1
    return {
        "images": float(n),
        "segments_per_image": float(per_image.mean()),
        "background_patch_fraction": float((segments < 0).mean()),
        "seconds_per_image": seconds / n,
    }


def num_clusters(params: ClusterParams, dataset: PreparedDataset) -> int:
    """K: as set, else one cluster per class but the one the background segment takes."""
    return params.k or len(dataset.classes) - 1


def run_clusters(
    features_path: Path, dataset_dir: Path, out: Path, params: ClusterParams
) -> dict[str, float]:
    """Dataset-level k-means of the segments' crop features (official ``extract_bbox_clusters``):
    L2-normalised, PCA to ``pca_dim`` (0: none), mini-batch k-means; one cluster per segment."""
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.decomposition import PCA

    features = S.open_segment_features(features_path)
    k = num_clusters(params, PreparedDataset(dataset_dir))
    x = np.asarray(features["cls"].values, np.float64)
    n = len(x)
    if n < k:
        raise UssegError(f"params spectral.k={k}: {features_path} has only {n} segments")
    start = time.perf_counter()
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if params.pca_dim:
        x = PCA(min(params.pca_dim, n, x.shape[1]), random_state=params.seed).fit_transform(x)
    kmeans = MiniBatchKMeans(n_clusters=k, batch_size=params.kmeans_batch_size, max_iter=params.max_iter,
                             random_state=params.seed, n_init=3)  # fmt: skip
    labels = kmeans.fit_predict(x).astype(np.int32)
    seconds = time.perf_counter() - start
    rest = {name: value for name, value in dataclasses.asdict(params).items() if name != "k"}
    attrs = {"k": k, "made_by": "spectral-clusters", **rest}
    S.write_pseudolabels(out, labels, features["image"].values, features["segment_id"].values, attrs)
    sizes = np.bincount(labels, minlength=k)
    images = len(set(S.ids(features["image"].values)))
    return {"k": float(k), "segments": float(n), "empty_clusters": float((sizes == 0).sum()),
            "largest_cluster_fraction": float(sizes.max() / n), "seconds_per_image": seconds / images}  # fmt: skip


def run_masks(segments_path: Path, clusters_path: Path, out: Path) -> dict[str, float]:
    """Patch labels for the refine stage: the background segment 0, a segment in cluster c, c + 1."""
    segments = S.open_segments(segments_path)
    clusters = S.open_pseudolabels(clusters_path)
    maps = segments["segments"].values
    index = {image: i for i, image in enumerate(S.ids(segments["image"].values))}
    labels = np.zeros(maps.shape, np.uint8)
    seen = np.zeros(len(maps), np.int64)
    for image, seg, cluster in zip(S.ids(clusters["image"].values), clusters["segment_id"].values,
                                   clusters["label"].values, strict=True):  # fmt: skip
        if image not in index:
            raise UssegError(f"{clusters_path}: image {image!r} is not in {segments_path}")
        i = index[image]
        labels[i][maps[i] == seg] = int(cluster) + 1
        seen[i] += 1
    per_image = maps.max(axis=(1, 2)) + 1
    short = np.flatnonzero(seen != per_image)
    if short.size:
        image = S.ids(segments["image"].values)[short[0]]
        raise UssegError(f"{clusters_path} does not cover {segments_path}: image {image!r} has "
                         f"{per_image[short[0]]} segments, {seen[short[0]]} clustered")  # fmt: skip
    k = int(clusters.attrs["k"])
    write_predictions(
        out, S.ids(segments["image"].values), segments["height"].values, segments["width"].values,
        labels=labels, num_labels=k + 1, attrs={"method": "spectral", "segments": str(segments_path)},
    )  # fmt: skip
    return {"k": float(k), "background_patch_fraction": float((labels == 0).mean())}
