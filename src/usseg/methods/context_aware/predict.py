"""Evaluation split -> trained embeddings -> assignment to the trained centroids -> patch_scores.zarr.

The predictions sit on the network's output grid (stride 4 for the ResNet, the patch grid
for the ViT) of the warped image; the shared refine stage maps them back to the original
size. ``output: soft`` writes softmax(cosine / predict_temperature) over the centroids
(what a CRF needs), ``hard`` the argmax labels. Written batch by batch: memory is one
batch whatever the split size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from usseg.artifacts.predictions import prediction_writer
from usseg.artifacts.prepared import PreparedDataset
from usseg.device import pick_device
from usseg.methods.context_aware.data import WarpedImages, batches
from usseg.methods.context_aware.losses import cosine_logits
from usseg.methods.context_aware.params import PredictParams
from usseg.methods.context_aware.train import embed, load_trained, to_unit


@torch.no_grad()
def predict(
    model_dir: Path,
    dataset_dir: Path,
    split: str,
    out: Path,
    params: PredictParams,
    weights: Path | None = None,
) -> Path:
    """Write ``out`` (patch-level predictions) for every image of ``split``."""
    model, centroids, trained = load_trained(model_dir, weights)
    device = pick_device(params.device)
    model = model.to(device)
    centroids = centroids.to(device)
    dataset = PreparedDataset(dataset_dir)
    records = dataset.records(split)
    images = WarpedImages(dataset, records, trained.image_size)
    loader = batches(images, range(len(images)), params.cluster_batch_size, params.workers)
    soft = params.output == "soft"
    attrs = {"method": "context_aware", "image_size": trained.image_size, "output": params.output}
    with prediction_writer(
        out, [r.id for r in records], [r.height for r in records], [r.width for r in records],
        kind="soft" if soft else "hard", num_labels=len(centroids), attrs=attrs,
    ) as writer:  # fmt: skip
        for _, batch in tqdm(loader, desc="context_aware predict", unit="batch"):
            z = F.normalize(embed(model, to_unit(batch, device), params.amp), dim=1)
            logits = cosine_logits(z, centroids, params.predict_temperature)
            writer.write((logits.softmax(1) if soft else logits.argmax(1).to(torch.uint8)).cpu().numpy())
    return out
