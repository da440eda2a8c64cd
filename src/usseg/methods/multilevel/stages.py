"""The branch's jobs as plain functions: read the artifacts, compute, write the artifacts.

The CLI wraps each in an MLflow job run; tests call them directly. Level masks travel
between jobs as hard-label patch-prediction stores (``labels``: 1 = foreground) whose
attrs carry the clustering ``units`` the consistency step needs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from tqdm import tqdm

from usseg.artifacts.atomic import atomic_dir, write_json
from usseg.artifacts.features import open_features
from usseg.artifacts.label_maps import read_index, read_map, write_index, write_map
from usseg.artifacts.predictions import open_predictions, write_predictions
from usseg.artifacts.prepared import PreparedDataset
from usseg.artifacts.upsample import upsample_labels
from usseg.errors import UssegError
from usseg.methods.multilevel import consistency as C
from usseg.methods.multilevel import labelling as L
from usseg.methods.multilevel.fgiou import ForegroundIoU, truth
from usseg.methods.multilevel.levels import LevelResult, category_level, dataset_level, image_level
from usseg.methods.multilevel.params import (
    LEVEL_PARAMS,
    CategoryLevelParams,
    ConsistencyGroup,
    DatasetLevelParams,
    LabelGroup,
    LabelParams,
    LevelParams,
)

log = logging.getLogger(__name__)

CONSISTENT = "consistent"


def num_foreground(dataset: PreparedDataset) -> int:
    """Foreground classes: every class but the background one, when there is one."""
    return len(dataset.classes) - int(bool(dataset.meta.get("has_background", True)))


def write_level(path: Path, features: xr.Dataset, result: LevelResult, name: str) -> None:
    write_predictions(
        path,
        features["image"].values,
        features["height"].values,
        features["width"].values,
        labels=result.mask,
        num_labels=2,
        attrs={"level": name, "units": result.units.tolist(), "info": result.info},
    )


def read_level(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(mask N x gh x gw uint8, units N, image ids) of a level store."""
    ds = open_predictions(path)
    if "labels" not in ds or ds.attrs.get("num_labels") != 2:
        raise UssegError(f"{path} is not a binary level mask (hard labels, num_labels=2)")
    units = np.asarray(ds.attrs.get("units", np.arange(ds.sizes["image"])), dtype=np.int64)
    return ds["labels"].values, units, [str(i) for i in ds["image"].values]


def run_level(
    level: str, features_path: Path, dataset_dir: Path, out: Path, cfg: LevelParams
) -> dict[str, float]:
    """Compute one level's mask and write it; returns summary statistics."""
    if level not in LEVEL_PARAMS:
        raise UssegError(f"unknown level {level!r} (known: {list(LEVEL_PARAMS)})")
    if type(cfg) is not LEVEL_PARAMS[level]:
        raise UssegError(f"the {level} level takes {LEVEL_PARAMS[level].__name__}, not {type(cfg).__name__}")
    features = open_features(features_path)
    if isinstance(cfg, DatasetLevelParams):
        result = dataset_level(features, cfg)
    elif isinstance(cfg, CategoryLevelParams):
        result = category_level(features, cfg, num_foreground(PreparedDataset(dataset_dir)))
    else:
        result = image_level(features, cfg)
    write_level(out, features, result, level)
    return {"foreground_fraction": float(result.mask.mean()), "units": float(len(np.unique(result.units)))}


def run_consistency(
    level_paths: Mapping[str, Path], scores_out: Path, mask_out: Path, cfg: ConsistencyGroup
) -> dict[str, float]:
    """Align, combine, fall back; write the soft scores and the consistent mask."""
    masks, units, ids = {}, {}, None
    for name in C.LEVELS:
        masks[name], units[name], level_ids = read_level(level_paths[name])
        if ids is not None and level_ids != ids:
            raise UssegError(f"{level_paths[name]} lists other images than {level_paths['dataset']}")
        ids = level_ids
    reference = masks["dataset"]
    aligned = {"dataset": reference}
    stats: dict[str, float] = {}
    for name in ("category", "image"):
        aligned[name] = C.align(masks[name], units[name], reference) if cfg.align else masks[name]
        flipped = (aligned[name] != masks[name]).reshape(len(reference), -1).any(1)
        stats[f"flipped_images.{name}"] = float(flipped.sum())
    mask = C.combine(aligned, cfg.levels, cfg.combine, cfg.vote_threshold, cfg.smooth_sigma)
    if cfg.fallback == "image":
        mask, fell = C.fall_back(mask, aligned["image"])
        stats["fallback_images"] = float(fell.sum())
    vote = C.votes(aligned, cfg.levels)
    score = C.soft_score(mask, vote, cfg.soft_weight, cfg.smooth_sigma)
    ds = open_predictions(level_paths["dataset"])
    coords = (ds["image"].values, ds["height"].values, ds["width"].values)
    attrs = {"method": "multilevel", "levels": list(cfg.levels), "combine": cfg.combine}
    write_predictions(scores_out, *coords, scores=C.scores_array(score), num_labels=2, attrs=attrs)
    write_predictions(mask_out, *coords, labels=mask, num_labels=2, attrs={"level": CONSISTENT, **attrs})
    for name in C.LEVELS:
        stats[f"agreement.{name}"] = float((aligned[name] == mask).mean())
    stats["foreground_fraction"] = float(mask.mean())
    return stats


def load_foreground(refined: Path, image_id: str) -> np.ndarray:
    return read_map(refined, image_id) == 1


class CropEmbedder:
    """CLS of each region re-forwarded alone through the ViT, in batches across images."""

    def __init__(self, backbone: str, weights: Path, size: tuple[int, int], cfg: LabelGroup) -> None:
        import torch

        from usseg.backbones.extractor import build_backbone, normalize
        from usseg.device import pick_device

        self.torch, self.normalize = torch, normalize
        self.device = pick_device(cfg.device)
        self.model = build_backbone(backbone, weights, device=self.device)
        self.size, self.batch_size = size, cfg.batch_size
        self.pending: list[np.ndarray] = []
        self.done: list[np.ndarray] = []

    def add(self, image: np.ndarray, comp: np.ndarray, n: int) -> None:
        self.pending.extend(L.region_crops(image, comp, n, self.size))
        while len(self.pending) >= self.batch_size:
            self._flush(self.batch_size)

    def _flush(self, count: int) -> None:
        batch, self.pending = np.stack(self.pending[:count]), self.pending[count:]
        with self.torch.inference_mode():
            cls = self.model.cls_token(self.normalize(batch).to(self.device))
        self.done.append(cls.float().cpu().numpy())

    def result(self) -> np.ndarray:
        if self.pending:
            self._flush(len(self.pending))
        return np.concatenate(self.done) if self.done else np.zeros((0, 1), np.float32)


def region_embeddings(
    dataset: PreparedDataset,
    records: list[Any],
    refined: Path,
    features: xr.Dataset,
    cfg: LabelGroup,
    embedder: Callable[[], CropEmbedder],
) -> tuple[np.ndarray, list[int]]:
    """Embeddings of every kept region of the split, and how many each image has."""
    position = {str(i): j for j, i in enumerate(features["image"].values)}
    crops = embedder() if cfg.embedding == "crop" else None
    parts, counts = [], []
    for record in tqdm(records, desc="region embeddings", unit="img"):
        comp, n = L.regions(load_foreground(refined, record.id), cfg.min_area, cfg.connectivity)
        counts.append(n)
        if n == 0:
            continue
        if crops is not None:
            crops.add(dataset.load_image(record), comp, n)
        else:
            if record.id not in position:
                raise UssegError(f"image {record.id!r} is not in the feature store")
            one = features.isel(image=position[record.id])
            patch = one["patch"].values.astype(np.float32)
            parts.append(L.attention_embeddings(comp, n, patch, one["attn"].values.astype(np.float32)))
    if crops is not None:
        return crops.result(), counts
    return (np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)), counts


def run_label(
    *,
    refined: Path,
    features_path: Path,
    dataset_dir: Path,
    split: str,
    level_paths: Mapping[str, Path],
    out: Path,
    fg_iou_path: Path,
    panels_dir: Path,
    pictures: int,
    cfg: LabelParams,
    embedder: Callable[[], CropEmbedder],
) -> tuple[dict[str, float], dict[str, Any], list[Path]]:
    """Label the refined foreground; measure every mask's foreground IoU; draw panels.

    Returns (label statistics, the fg_iou.json content, the panel files written).
    """
    from usseg.methods.multilevel.panels import panel  # matplotlib: this job alone draws

    dataset = PreparedDataset(dataset_dir)
    records = dataset.records(split)
    index = read_index(refined, num_labels=2)  # background / foreground
    features = open_features(features_path)
    label = cfg.label
    emb, counts = region_embeddings(dataset, records, refined, features, label, embedder)
    k = label.k or num_foreground(dataset)
    clusters = L.cluster_regions(
        emb, k, pca_dim=label.pca_dim, niter=cfg.niter, nredo=cfg.nredo, seed=cfg.seed
    )
    k_eff = int(min(k, len(emb))) if len(emb) else k
    starts = np.concatenate([[0], np.cumsum(counts)])
    level_masks = {name: read_level(level_paths[name]) for name in (*C.LEVELS, CONSISTENT)}
    mask_position = {i: j for j, i in enumerate(level_masks["dataset"][2])}
    meter = ForegroundIoU()
    measured = bool(dataset.meta.get("has_background", True))
    if not measured:
        log.warning("dataset %r has no background class: foreground IoU is not measured", dataset.name)
    palette = np.asarray(dataset.meta.get("palette") or [], dtype=np.uint8).reshape(-1, 3)
    drawn = []
    with atomic_dir(out) as tmp, atomic_dir(panels_dir) as panels_tmp:
        for i, record in enumerate(tqdm(records, desc="label maps", unit="img")):
            fg = load_foreground(refined, record.id)
            comp, n = L.regions(fg, label.min_area, label.connectivity)
            labels = L.label_map(comp, clusters[starts[i] : starts[i] + n])
            write_map(tmp, record.id, labels)
            gt = dataset.load_label(record)
            if record.id not in mask_position:
                raise UssegError(
                    f"image {record.id!r} of split {split!r} is not in the level mask {level_paths['dataset']}"
                )
            j = mask_position[record.id]
            masks = [(name, upsample_labels(m[0][j], *fg.shape)) for name, m in level_masks.items()]
            masks.append(("refined", fg))
            if gt is not None and measured:
                truth_fg, valid = truth(gt, dataset.ignore_index)
                for name, m in masks:
                    meter.add(name, m, truth_fg, valid)
            if i < pictures:
                title = f"{record.id} ({split}, crf {index.get('crf', 'unknown')})"
                panel(
                    panels_tmp / f"{record.id}.png",
                    dataset.load_image(record),
                    masks,
                    labels,
                    gt,
                    palette,
                    title,
                )
                drawn.append(record.id)
        write_index(
            tmp,
            {
                "num_labels": k_eff + 1,
                "split": split,
                "crf": index.get("crf", "unknown"),
                "method": "multilevel",
                "embedding": label.embedding,
            },
        )
    fg_iou = {
        "split": split,
        "crf": index.get("crf", "unknown"),
        "iou": meter.result(),
        "definition": "binary IoU of foreground (any non-background class) over the split, 255 ignored",
    }
    write_json(fg_iou_path, fg_iou)
    stats = {
        "regions": float(len(emb)),
        "clusters": float(k_eff),
        "images_without_regions": float(sum(c == 0 for c in counts)),
    }
    return stats, fg_iou, [panels_dir / f"{image_id}.png" for image_id in drawn]
