"""Siamese training: cluster the embeddings, then learn to predict the clusters across views.

Each epoch: (1) an un-augmented pass over the training split gives the mini-batch k-means
centroids of the L2-normalised pixel embeddings and, with PSG on, the pyramid cell
labels; (2) for each batch, two views (photometric; photometric + crop/flip), the first
view's map resampled into the second's frame, PiCIE's within/cross-view cross-entropy on
the assignments, plus PSG's cell terms on the full-frame view; (3) a checkpoint holding
everything the next epoch depends on (weights, optimiser, RNG states, history), so an
interrupted run resumes there and ends with the same weights. A last clustering pass
with the final weights gives the centroids prediction assigns to.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from usseg.artifacts.atomic import atomic_dir, atomic_file, write_json
from usseg.artifacts.digest import file_digest
from usseg.artifacts.prepared import PreparedDataset
from usseg.device import pick_device
from usseg.errors import UssegError
from usseg.job_args import build_typed
from usseg.methods.context_aware.clustering import MiniBatchKMeans, cluster_stats
from usseg.methods.context_aware.data import WarpedImages, batches, training_split
from usseg.methods.context_aware.losses import cosine_logits, picie_losses
from usseg.methods.context_aware.model import Embedder, build_model, load_trainable_state, trainable_state
from usseg.methods.context_aware.params import TrainParams
from usseg.methods.context_aware.psg import PyramidCells, PyramidTargets, pooled_cells, psg_losses
from usseg.methods.context_aware.views import apply_geometric, photometric, sample_geometric

log = logging.getLogger(__name__)

MetricsLogger = Callable[[Mapping[str, float], int], None]
FINAL = "final.pt"


def resolve_k(k: int | None, num_classes: int) -> int:
    """``null`` means one cluster per class of the dataset."""
    return k if k is not None else int(num_classes)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """bfloat16 autocast on CUDA (no loss scaling needed); a no-op on the CPU."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def to_unit(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    return batch.to(device, non_blocking=True).float().div_(255.0)


def embed(model: Embedder, rgb: torch.Tensor, amp: bool) -> torch.Tensor:
    with autocast(rgb.device, amp):
        return model(rgb).float()


def subsample(z: torch.Tensor, per_image: int, gen: torch.Generator) -> np.ndarray:
    """(B, D, h, w) -> rows for k-means: ``per_image`` seeded pixels per image (all when fewer)."""
    b, d, h, w = z.shape
    rows = z.permute(0, 2, 3, 1).reshape(b, h * w, d)
    if per_image < h * w:
        keep = torch.argsort(torch.rand(b, h * w, generator=gen), dim=1)[:, :per_image].to(z.device)
        rows = torch.gather(rows, 1, keep[..., None].expand(-1, -1, d))
    return rows.reshape(-1, d).cpu().numpy()


@torch.no_grad()
def clustering_pass(
    model: Embedder, images: WarpedImages, params: TrainParams, k: int, epoch: int, device: torch.device
) -> tuple[torch.Tensor, np.ndarray, PyramidTargets | None]:
    """(pixel centroids K x D, pixels per cluster, PSG targets or None) for the current weights."""
    model.eval()
    seed = params.seed * 1000 + epoch
    kmeans = MiniBatchKMeans(k, params.cluster_niter, params.cluster_init_batches, seed)
    gen = torch.Generator().manual_seed(seed)
    levels = list(params.psg_levels) if params.psg else []
    cells = PyramidCells(levels, len(images), params.psg_fit_images, seed) if levels else None
    loader = batches(images, range(len(images)), params.cluster_batch_size, params.workers)
    for index, batch in tqdm(loader, desc=f"clustering (epoch {epoch})", unit="batch", leave=False):
        features = embed(model, to_unit(batch, device), params.amp)
        kmeans.add(subsample(F.normalize(features, dim=1), params.cluster_points_per_image, gen))
        if cells is not None:
            cells.add(index.numpy(), pooled_cells(features, levels))
    centroids, counts = kmeans.finish()
    targets = None
    if cells is not None:
        targets = cells.fit(resolve_k(params.psg_k, k), params.cluster_niter, seed)
    return torch.from_numpy(centroids), counts, targets


def step_losses(
    model: Embedder,
    x: torch.Tensor,
    index: torch.Tensor,
    centroids: torch.Tensor,
    targets: PyramidTargets | None,
    params: TrainParams,
    gen: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted training loss of one batch and its parts (for the logs)."""
    views = params.views
    geo = sample_geometric(len(x), gen, views.crop_scale, views.crop_ratio, views.flip_prob)
    v1 = photometric(x, gen, views)
    v2 = photometric(apply_geometric(x, geo), gen, views)
    f1 = embed(model, v1, params.amp)
    f2 = embed(model, v2, params.amp)
    tau = params.temperature
    c = centroids.to(x.device)
    aligned = apply_geometric(f1, geo, (f2.shape[-2], f2.shape[-1]))
    logits1 = cosine_logits(F.normalize(aligned, dim=1), c, tau)
    logits2 = cosine_logits(F.normalize(f2, dim=1), c, tau)
    within, cross = picie_losses(logits1, logits2)
    weights = params.loss_weights
    loss = weights.within * within + weights.cross * cross
    parts = {"loss_within": within.item(), "loss_cross": cross.item()}
    if targets is not None:
        full_logits = cosine_logits(F.normalize(f1, dim=1), c, tau)
        cell, kl = psg_losses(f1, full_logits, c, targets, index, tau, params.psg_target_temperature)
        loss = loss + weights.cell * cell + weights.kl * kl
        parts.update(loss_cell=cell.item(), loss_kl=kl.item())
    counts = np.bincount(logits2.detach().argmax(1).flatten().cpu().numpy(), minlength=len(c))
    parts["batch_cluster_entropy"] = cluster_stats(counts)["size_entropy"]
    parts["loss"] = loss.item()
    return loss, parts


def fingerprint(params: TrainParams, context: Mapping[str, Any]) -> str:
    """What the weights depend on; checkpoints made under another fingerprint are not resumed."""
    return json.dumps({"params": dataclasses.asdict(params), **context}, sort_keys=True, default=str)


def save_checkpoint(
    path: Path, model: Embedder, optimiser: torch.optim.Optimizer, gen: torch.Generator, state: dict[str, Any]
) -> None:
    rng = {"torch": torch.get_rng_state(), "views": gen.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    payload = {**state, "model": trainable_state(model), "optimiser": optimiser.state_dict(), "rng": rng}
    with atomic_file(path, "wb") as fh:
        torch.save(payload, fh)


def latest_checkpoint(folder: Path, fp: str) -> dict[str, Any] | None:
    """The newest checkpoint in ``folder`` made under fingerprint ``fp`` (None: start afresh)."""
    for path in sorted(folder.glob("epoch_*.pt"), reverse=True):
        state = torch.load(path, map_location="cpu", weights_only=True)
        if state.get("fingerprint") == fp:
            log.info("resuming from %s", path)
            return state
        log.info("ignoring %s: made with other parameters", path)
    return None


def restore(
    state: Mapping[str, Any],
    model: Embedder,
    optimiser: torch.optim.Optimizer,
    gen: torch.Generator,
    source: Path,
) -> None:
    load_trainable_state(model, state["model"], source)
    optimiser.load_state_dict(state["optimiser"])
    torch.set_rng_state(state["rng"]["torch"])
    gen.set_state(state["rng"]["views"])
    if "cuda" in state["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])


def prune_checkpoints(folder: Path, keep: int) -> None:
    for path in sorted(folder.glob("epoch_*.pt"))[:-keep]:
        path.unlink()


def train(
    dataset_dir: Path,
    evaluation_split: str,
    out: Path,
    params: TrainParams,
    backbone: str | None = None,
    weights: Path | None = None,
    log_metrics: MetricsLogger | None = None,
) -> Path:
    """Train into ``out`` (``final.pt``, ``config.json``, ``history.json``, ``checkpoints/``).

    Work in progress lives in ``<out>.partial``; an interrupted run called again resumes
    from its last checkpoint there.
    """
    dataset = PreparedDataset(dataset_dir)
    split = training_split(dataset, params.train_split, evaluation_split)
    records = dataset.records(split)
    k = resolve_k(params.k, len(dataset.classes))
    if not 2 <= k <= 254:
        raise UssegError(f"params context_aware.k={k}: must be in 2..254")
    device = pick_device(params.device)
    seed = params.seed
    images = WarpedImages(dataset, records, params.image_size)
    # the images' and the initial weights' bytes too: a resumed run never continues from
    # checkpoints trained on a changed image, ViT or init checkpoint
    vit = params.arch == "vit"
    checkpoint = params.checkpoint if not vit else None
    context = {
        "k": k,
        "split": split,
        "images": [r.id for r in records],
        "split_index_sha256": file_digest(dataset.root / f"{split}.csv"),
        "backbone": backbone if vit else None,
        "weights_sha256": file_digest(weights) if weights is not None and vit else None,
        "checkpoint_sha256": file_digest(checkpoint) if checkpoint and Path(checkpoint).is_file() else None,
    }
    fp = fingerprint(params, context)

    torch.manual_seed(seed)
    model = build_model(params, backbone, weights).to(device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(trainable, lr=params.lr, weight_decay=params.weight_decay)
    gen = torch.Generator().manual_seed(seed)
    emit = log_metrics or (lambda metrics, step: None)

    epochs, bs = params.epochs, params.batch_size
    steps_per_epoch = math.ceil(len(images) / bs)
    with atomic_dir(out, resume=True) as tmp:
        ckpt_dir = tmp / "checkpoints"
        ckpt_dir.mkdir(exist_ok=True)
        state = latest_checkpoint(ckpt_dir, fp)
        history: dict[str, list[Any]] = {"steps": [], "epochs": []}
        start = 0
        if state is not None:
            restore(state, model, optimiser, gen, ckpt_dir)
            history = json.loads(state["history"])
            start = int(state["epoch"]) + 1
        for epoch in range(start, epochs):
            began = time.perf_counter()
            centroids, counts, targets = clustering_pass(model, images, params, k, epoch, device)
            stats = cluster_stats(counts)
            model.train()
            order = torch.randperm(len(images), generator=gen).tolist()
            loader = batches(images, order, bs, params.workers)
            for i, (index, batch) in enumerate(
                tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", unit="batch")
            ):
                loss, parts = step_losses(
                    model, to_unit(batch, device), index, centroids, targets, params, gen
                )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                step = epoch * steps_per_epoch + i
                history["steps"].append({"step": step, **parts})
                if step % params.log_every == 0:
                    emit(parts, step)
            seconds = time.perf_counter() - began
            epoch_log = {
                "epoch": epoch,
                "seconds": seconds,
                **{f"cluster_{k_}": v for k_, v in stats.items()},
            }
            history["epochs"].append(epoch_log)
            emit({"epoch_seconds": seconds, **{f"cluster_{k_}": v for k_, v in stats.items()}}, epoch)
            save_checkpoint(
                ckpt_dir / f"epoch_{epoch:04d}.pt",
                model,
                optimiser,
                gen,
                {"epoch": epoch, "fingerprint": fp, "history": json.dumps(history)},
            )
            prune_checkpoints(ckpt_dir, params.keep_checkpoints)
        centroids, counts, _ = clustering_pass(model, images, params, k, epochs, device)
        emit({f"final_cluster_{k_}": v for k_, v in cluster_stats(counts).items()}, epochs)
        with atomic_file(tmp / FINAL, "wb") as fh:
            torch.save({"model": trainable_state(model), "centroids": centroids, "fingerprint": fp}, fh)
        # CPU training is reproducible only at the same thread count (reduction order), so record it.
        config = {"params": dataclasses.asdict(params), "backbone": backbone, **context}
        write_json(tmp / "config.json", {**config, "torch_threads": torch.get_num_threads()})
        write_json(tmp / "history.json", history)
    return out


def load_trained(model_dir: Path, weights: Path | None = None) -> tuple[Embedder, torch.Tensor, TrainParams]:
    """(network in eval mode, centroids K x D, the parameters it was trained with) from a
    finished training folder."""
    final, config_path = model_dir / FINAL, model_dir / "config.json"
    if not final.is_file() or not config_path.is_file():
        raise UssegError(f"{model_dir} is not a finished context_aware training (no {FINAL} / config.json)")
    config = json.loads(config_path.read_text())
    state = torch.load(final, map_location="cpu", weights_only=True)
    # The trained weights replace any initialisation, so the init checkpoint is not needed.
    trained = build_typed(TrainParams, config["params"])
    model = build_model(dataclasses.replace(trained, checkpoint=None), config.get("backbone"), weights)
    load_trainable_state(model, state["model"], final)
    return model.eval(), state["centroids"], trained
