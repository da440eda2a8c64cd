"""Batched ViT inference over a prepared split into the Zarr feature store.

Decoding and resizing run in a thread pool ahead of the model so the forward pass is
never starved; the store is written batch by batch and resumes after an interruption.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import shutil
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from usseg.artifacts import features as store
from usseg.artifacts.atomic import partial_path
from usseg.artifacts.digest import digest_tree, file_digest
from usseg.artifacts.prepared import PreparedDataset, Record, load_resized
from usseg.device import pick_device
from usseg.errors import UssegError, disk_full, is_disk_full
from usseg.features.params import FeatureParams

log = logging.getLogger(__name__)


def batches(
    dataset: PreparedDataset, records: Sequence[Record], size: int, patch: int, batch_size: int,
    ahead: int = 2,
) -> Iterator[np.ndarray]:  # fmt: skip
    """Yield uint8 batches (B x size x size x 3), decoding ahead in worker threads.

    At most ``ahead`` batches beyond the one being yielded are submitted to the pool, so
    memory is a few batches whatever the split size.
    """
    pending: deque[Future[np.ndarray]] = deque()
    todo = iter(records)
    with ThreadPoolExecutor(max_workers=2) as pool:

        def submit(count: int) -> None:
            for record in itertools.islice(todo, count):
                pending.append(pool.submit(load_resized, dataset, record, size, patch))

        submit((ahead + 1) * batch_size)
        while pending:
            batch = [pending.popleft().result() for _ in range(min(batch_size, len(pending)))]
            submit(len(batch))
            yield np.stack(batch)


def store_config(backbone: str, weights: Path, params: FeatureParams, dataset: PreparedDataset) -> dict[str, Any]:
    """Everything the store's content depends on; a mismatch means rebuild, never reuse."""
    return {
        "backbone": backbone,
        "weights_sha256": file_digest(weights),
        "image_size": params.image_size,
        "facet": params.facet,
        "layer": "last",
        "split": params.split,
        "split_index_sha256": file_digest(dataset.root / f"{params.split}.csv"),
        "format": 1,
    }


def extract_features(
    dataset_dir: Path, backbone: str, weights: Path, out: Path, params: FeatureParams
) -> Path:
    """Build (or resume) ``out``; returns it."""
    from usseg.backbones.extractor import build_backbone

    dataset = PreparedDataset(dataset_dir)
    records = dataset.records(params.split)
    device = pick_device(params.device, "features.device")
    model = build_backbone(backbone, weights, device=device)
    size, patch = params.image_size, model.patch_size
    if size % patch:
        raise UssegError(
            f"params features.image_size={size} is not a multiple of {backbone}'s patch size {patch}"
        )
    config = store_config(backbone, weights, params, dataset)
    fp = store.fingerprint(config)
    if out.exists():
        if store.read_attrs(out).get("fingerprint") == fp:
            log.info("%s is up to date", out)
            return out
        log.info("%s was made with other parameters: rebuilding", out)
        shutil.rmtree(out)
    tmp = partial_path(out)
    if tmp.exists() and store.read_attrs(tmp).get("fingerprint") != fp:
        log.info("discarding %s: made with other parameters", tmp)
        shutil.rmtree(tmp)
    grid = (size // patch, size // patch)
    start = 0
    try:
        if not tmp.exists():
            attrs = {
                **config,
                "fingerprint": fp,
                "grid": list(grid),
                "patch_size": patch,
                "image_size": [size, size],
            }
            store.create_store(tmp, records, grid, model.embed_dim, model.num_heads, attrs)
        start = store.first_missing(tmp)
        if start:
            log.info("resuming %s at image %d of %d", tmp, start, len(records))
        _write_images(dataset, records[start:], tmp, start, len(records), model, params, backbone, device)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        # float16 patch features, attention maps and CLS per image (before Zarr's compression)
        per_image = 2 * (grid[0] * grid[1] * (model.embed_dim + model.num_heads) + model.embed_dim)
        raise disk_full(tmp, per_image * (len(records) - start)) from exc
    digest = digest_tree_of_arrays(tmp, fp)
    store.set_attrs(tmp, digest=digest)
    tmp.rename(out)
    return out


def _write_images(
    dataset: PreparedDataset, todo: list[Any], tmp: Path, start: int, total: int, model: Any,
    params: FeatureParams, backbone: str, device: Any,
) -> None:  # fmt: skip
    """Forward ``todo`` batch by batch and write each into the store from image ``start`` on."""
    from usseg.backbones.extractor import normalize

    size, patch, bs = params.image_size, model.patch_size, params.batch_size
    with (
        torch.inference_mode(),
        tqdm(total=total, initial=start, desc=f"features {backbone}", unit="img") as bar,
    ):
        position = start
        for batch in batches(dataset, todo, size, patch, bs):
            x = normalize(batch).to(device)
            out_t = model(x, facet=params.facet)
            store.write_batch(
                tmp,
                position,
                out_t["patch"].float().cpu().numpy(),
                out_t["cls"].float().cpu().numpy(),
                out_t["attn"].float().cpu().numpy(),
            )
            position += len(batch)
            bar.update(len(batch))


def digest_tree_of_arrays(path: Path, fp: str) -> str:
    """Digest of the data arrays plus the fingerprint (the attributes file changes on write)."""
    h = hashlib.sha256(fp.encode())
    for name in ("patch", "cls", "attn", "image", "height", "width"):
        h.update(name.encode())
        h.update(digest_tree(path / name).encode())
    return h.hexdigest()
