"""The four DatUS² jobs, each from its input artifacts to its output artifact.

The CLI (``usseg.methods.datus2.cli``) wraps each in an MLflow job run; these functions
return the statistics it logs (counts and seconds per image).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import zarr
from tqdm import tqdm

from usseg.artifacts import segments as stores
from usseg.artifacts.atomic import partial_path
from usseg.artifacts.digest import digest_tree, file_digest
from usseg.artifacts.features import open_features
from usseg.artifacts.predictions import write_predictions
from usseg.artifacts.prepared import PreparedDataset, Record
from usseg.errors import UssegError
from usseg.methods.datus2.masks import dense_masks
from usseg.methods.datus2.params import CropParams, PseudolabelParams, SegmentParams

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)  # each job imports its own algorithm (torch, sklearn, sknetwork)


def run_segments(features_path: Path, out: Path, params: SegmentParams) -> dict[str, float]:
    """Louvain communities and valid segments of every image of the feature store."""
    from usseg.methods.datus2.segments import segment_image

    features = open_features(features_path)
    facet = features.attrs.get("facet")
    if facet != "keys":
        log.warning("%s holds the %r facet; DatUS² builds its graph on last-block keys", features_path, facet)
    n, gh, gw = features.sizes["image"], features.sizes["y"], features.sizes["x"]
    segments = np.empty((n, gh, gw), np.int32)
    communities = np.empty((n, gh, gw), np.int32)
    components = np.empty(n, np.int64)
    start = time.perf_counter()
    for i in tqdm(range(n), desc="datus2 segments", unit="img"):
        result = segment_image(
            features["patch"][i].values, params.threshold, params.resolution, params.seed, params.tau, params.center
        )
        segments[i], communities[i], components[i] = (
            result.segments,
            result.communities,
            result.num_components,
        )
    seconds = time.perf_counter() - start
    attrs = {
        "grid": [gh, gw],
        "image_size": list(features.attrs["image_size"]),
        "patch_size": int(features.attrs["patch_size"]),
        "backbone": str(features.attrs.get("backbone", "")),
        "facet": str(facet),
        "features_digest": str(features.attrs.get("digest", "")),
        **dataclasses.asdict(params),
    }
    stores.write_segments(
        out, features["image"].values, features["height"].values, features["width"].values,
        segments, communities, attrs,
    )  # fmt: skip
    per_image = segments.max(axis=(1, 2)) + 1
    return {
        "images": float(n),
        "segments_per_image": float(per_image.mean()),
        "segments_per_image_min": float(per_image.min()),
        "segments_per_image_max": float(per_image.max()),
        "communities_per_image": float((communities.max(axis=(1, 2)) + 1).mean()),
        "components_per_image": float(components.mean()),
        "valid_patch_fraction": float((segments >= 0).mean()),
        "seconds_per_image": seconds / n,
    }


def _records_by_id(dataset: PreparedDataset, split: str, ids: np.ndarray, source: Path) -> list[Record]:
    records = {r.id: r for r in dataset.records(split)}
    missing = [i for i in stores.ids(ids) if i not in records]
    if missing:
        raise UssegError(
            f"images {missing[:5]} of {source} are not in split {split!r} of {dataset.root}; "
            "the segments were made from another dataset or split"
        )
    return [records[i] for i in stores.ids(ids)]


def _crop_batches(
    dataset: PreparedDataset, records: list[Record], segment_maps: Any, attrs: dict[str, Any],
    params: CropParams, first: int = 0, skip: int = 0,
) -> Iterator[torch.Tensor]:  # fmt: skip
    """Yield batches of ``params.batch_size`` segment crops, starting at image ``first``
    (its first ``skip`` segments left out): a resumed run sees the same batches."""
    import torch

    from usseg.methods.datus2.crops import crop_transform, crops_to_batch, resize_image, segment_crops

    size = tuple(int(s) for s in attrs["image_size"])
    transform = crop_transform(params.crop_resize, params.crop_size)
    bs = params.batch_size
    pending: list[torch.Tensor] = []
    for i in tqdm(range(first, len(records)), desc="datus2 segment crops", unit="img", initial=first,
                  total=len(records)):  # fmt: skip
        segment_map = segment_maps[i].values
        if segment_map.max() < 0:
            continue
        image = resize_image(dataset.load_image(records[i]), size)
        crops = segment_crops(image, segment_map, int(attrs["patch_size"]), params.fill)
        pending.extend(crops_to_batch(crops, transform)[skip if i == first else 0 :])
        while len(pending) >= bs:
            yield torch.stack(pending[:bs])
            pending = pending[bs:]
    if pending:
        yield torch.stack(pending)


def segment_features_config(
    segments_path: Path, dataset: PreparedDataset, split: str, backbone: str, weights: Path,
    params: CropParams,
) -> dict[str, Any]:  # fmt: skip
    """Everything the segment features depend on; a partial store with another one is discarded."""
    return {
        "segments_digest": digest_tree(segments_path),
        "split": split,
        "split_index_sha256": file_digest(dataset.root / f"{split}.csv"),
        "backbone": backbone,
        "weights_sha256": file_digest(weights),
        "fill": params.fill, "crop_resize": params.crop_resize, "crop_size": params.crop_size,
        "batch_size": params.batch_size,
    }


def run_segment_features(
    segments_path: Path, dataset_dir: Path, split: str, backbone: str, weights: Path, out: Path,
    params: CropParams,
) -> dict[str, float]:  # fmt: skip
    """L2-normalised CLS of the ViT on the masked box crop of every valid segment.

    Written chunk by chunk into ``<out>.partial``; after an interruption the job resumes at
    the first chunk not done (same batches, so the same bytes as an uninterrupted run).
    """
    import torch

    from usseg.backbones.extractor import build_backbone
    from usseg.device import pick_device

    segments = stores.open_segments(segments_path)
    per_image = segments["num_segments"].values.astype(np.int64)
    n_segments = int(per_image.sum())
    if n_segments == 0:
        raise UssegError(
            f"{segments_path}: no image has a valid segment (params datus2.tau={segments.attrs['tau']}, "
            f"datus2.center={segments.attrs['center']}, backbone {backbone}: keys that are all mutually "
            "positive, as DINOv2's raw keys, link every patch pair and leave Louvain with singletons; "
            "see docs/methods/datus2.md)"
        )
    dataset = PreparedDataset(dataset_dir)
    records = _records_by_id(dataset, split, segments["image"].values, segments_path)
    device = pick_device(params.device)
    model = build_backbone(backbone, weights, device=device)
    bs = params.batch_size
    config = segment_features_config(segments_path, dataset, split, backbone, weights, params)
    fingerprint = json.dumps(config, sort_keys=True)
    tmp = partial_path(out)
    if tmp.exists() and dict(zarr.open_group(str(tmp), mode="r").attrs).get("fingerprint") != fingerprint:
        log.info("discarding %s: made with other inputs or parameters", tmp)
        shutil.rmtree(tmp)
    if not tmp.exists():
        image_ids = [r.id for r, n in zip(records, per_image, strict=True) for _ in range(n)]
        segment_ids = [s for n in per_image for s in range(n)]
        attrs = {"backbone": backbone, "fill": params.fill, "crop_resize": params.crop_resize,
                 "crop_size": params.crop_size, "fingerprint": fingerprint}  # fmt: skip
        stores.create_segment_features(tmp, image_ids, segment_ids, model.embed_dim, bs, attrs)
    chunk = stores.first_missing_batch(tmp)
    starts = np.concatenate([[0], np.cumsum(per_image)])
    first = int(np.searchsorted(starts, chunk * bs, side="right") - 1)
    if chunk:
        log.info("resuming %s at segment chunk %d (image %d of %d)", tmp, chunk, first, len(records))
    start = time.perf_counter()
    with torch.inference_mode():
        batches = _crop_batches(dataset, records, segments["segments"], segments.attrs, params, first,
                                chunk * bs - int(starts[first]))  # fmt: skip
        for index, batch in enumerate(batches, start=chunk):
            cls = model.cls_token(batch.to(device)).float()
            cls = torch.nn.functional.normalize(cls, dim=1).cpu().numpy()
            stores.write_segment_feature_batch(tmp, index, cls)
    seconds = time.perf_counter() - start
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    done = max(len(records) - first, 1)
    return {"segments": float(n_segments), "seconds_per_image": seconds / done,
            "seconds_per_segment": seconds / max(n_segments - chunk * bs, 1)}  # fmt: skip


def run_pseudolabels(
    features_path: Path, dataset_dir: Path, out: Path, params: PseudolabelParams
) -> dict[str, float]:
    """Dataset-level k-means of the segment embeddings: one cluster id per segment."""
    from usseg.methods.datus2.pseudolabels import fit_pseudolabels

    features = stores.open_segment_features(features_path)
    k = params.k or len(PreparedDataset(dataset_dir).classes)
    n = features.sizes["segment"]
    if n < k:
        raise UssegError(f"params datus2.k={k}: {features_path} has only {n} valid segments")
    start = time.perf_counter()
    labels = fit_pseudolabels(
        features["cls"].values, k, init=params.init, epochs=params.epochs,
        batch_size=params.kmeans_batch_size, seed=params.seed, pca=params.pca,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    attrs = {"k": int(k), "init": params.init, "epochs": params.epochs,
             "kmeans_batch_size": params.kmeans_batch_size, "seed": params.seed, "pca": params.pca}  # fmt: skip
    stores.write_pseudolabels(out, labels, features["image"].values, features["segment_id"].values, attrs)
    sizes = np.bincount(labels, minlength=k)
    images = len(set(stores.ids(features["image"].values)))
    return {"k": float(k), "segments": float(n), "empty_clusters": float((sizes == 0).sum()),
            "largest_cluster_fraction": float(sizes.max() / n), "seconds_per_image": seconds / images}  # fmt: skip


def run_masks(segments_path: Path, pseudolabels_path: Path, out: Path) -> dict[str, float]:
    """Dense patch-level pseudo-masks (255 outside valid segments) for the refine stage."""
    segments = stores.open_segments(segments_path)
    pseudo = stores.open_pseudolabels(pseudolabels_path)
    index = {image: i for i, image in enumerate(stores.ids(segments["image"].values))}
    unknown = sorted(set(stores.ids(pseudo["image"].values)) - set(index))
    if unknown:
        raise UssegError(f"{pseudolabels_path}: images {unknown[:5]} are not in {segments_path}")
    start = time.perf_counter()
    image_index = np.asarray([index[i] for i in stores.ids(pseudo["image"].values)], dtype=np.int64)
    try:
        masks = dense_masks(segments["segments"].values, image_index, pseudo["segment_id"].values,
                            pseudo["label"].values)  # fmt: skip
    except ValueError as exc:
        raise UssegError(f"{pseudolabels_path} does not cover {segments_path}: {exc}") from exc
    k = int(pseudo.attrs["k"])
    write_predictions(
        out, stores.ids(segments["image"].values), segments["height"].values, segments["width"].values,
        labels=masks, num_labels=k, attrs={"method": "datus2", "segments": str(segments_path)},
    )  # fmt: skip
    return {"k": float(k), "labelled_patch_fraction": float((masks != 255).mean()),
            "seconds_per_image": (time.perf_counter() - start) / len(masks)}  # fmt: skip


def run_pictures(
    segments_path: Path, scores_path: Path, dataset_dir: Path, split: str, folder: Path, count: int
) -> list[Path]:
    """Panels (image, communities, segments, pseudo-mask, truth) of the first ``count`` images."""
    from usseg.artifacts.predictions import open_predictions
    from usseg.methods.datus2.pictures import draw_panels

    segments = stores.open_segments(segments_path).isel(image=slice(0, count))
    masks = open_predictions(scores_path)["labels"].isel(image=slice(0, count)).values
    dataset = PreparedDataset(dataset_dir)
    records = _records_by_id(dataset, split, segments["image"].values, segments_path)
    images = [(r.id, dataset.load_image(r), dataset.load_label(r)) for r in records]
    palette = np.asarray(dataset.meta["palette"], np.uint8)
    return draw_panels(
        folder, images, segments["communities"].values, segments["segments"].values, masks, palette
    )
