"""Features stage throughput vs the bare model forward, measured in one run.

    python bench/features.py --dataset-dir data/prepared/demo \
        --backbone dinov2_vits14_imgfocus --weights data/weights/dinov2_vits14_imgfocus.safetensors

Prints images/second of the whole stage (decode, resize, forward, Zarr write, resume
bookkeeping) and of the model forward alone on the same already-decoded images, and
their ratio: how much of the forward's speed the stage keeps. On a GPU it also prints
the achieved fraction of the device's peak bf16 FLOP/s (pass --peak-tflops).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from usseg.artifacts.prepared import PreparedDataset, load_resized
from usseg.backbones.extractor import build_backbone, normalize
from usseg.device import pick_device
from usseg.features.extract import extract_features
from usseg.features.params import FeatureParams


def vit_flops_per_image(model: torch.nn.Module, tokens: int) -> float:
    """Forward FLOPs of a ViT: 2 x params x tokens for the linear layers + attention matmuls."""
    params = sum(p.numel() for n, p in model.named_parameters() if "blocks" in n)
    dim, depth = model.embed_dim, len(model.model.blocks)
    return 2.0 * params * tokens + depth * 4.0 * tokens * tokens * dim


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--backbone", default="dinov2_vits14_imgfocus")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=3, help="timed repetitions; the best is reported")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="device peak bf16 TFLOP/s (GPU runs)")
    args = ap.parse_args()

    dataset = PreparedDataset(args.dataset_dir)
    records = dataset.records(args.split)
    device = pick_device(args.device)
    model = build_backbone(args.backbone, args.weights, device=device)
    params = FeatureParams(image_size=args.image_size, facet="keys", batch_size=args.batch_size,
                           device=args.device, split=args.split)

    images = np.stack([load_resized(dataset, r, args.image_size, model.patch_size) for r in records])
    batches = [normalize(images[i : i + args.batch_size]).to(device) for i in range(0, len(images), args.batch_size)]

    def forward_only() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for x in batches:
                out = model(x, facet="keys")
                out["patch"].float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    def whole_stage() -> float:
        tmp = Path(tempfile.mkdtemp())
        try:
            start = time.perf_counter()
            extract_features(Path(args.dataset_dir), args.backbone, Path(args.weights), tmp / "f.zarr", params)
            return time.perf_counter() - start
        finally:
            shutil.rmtree(tmp)

    forward_only()  # warm-up
    t_forward = min(forward_only() for _ in range(args.repeats))
    t_stage = min(whole_stage() for _ in range(args.repeats))
    n = len(records)
    print(f"images: {n} at {args.image_size}px, batch {args.batch_size}, device {device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"model forward alone : {n / t_forward:8.2f} img/s")
    print(f"features stage      : {n / t_stage:8.2f} img/s  (decode + resize + forward + Zarr write)")
    print(f"ratio stage/forward : {t_forward / t_stage:8.3f}")
    if device.type == "cuda" and args.peak_tflops:
        tokens = (args.image_size // model.patch_size) ** 2 + model.spec.num_prefix_tokens
        achieved = vit_flops_per_image(model, tokens) * n / t_forward / 1e12
        print(f"forward FLOP/s      : {achieved:8.1f} TFLOP/s = {achieved / args.peak_tflops:.1%} of peak")


if __name__ == "__main__":
    main()
