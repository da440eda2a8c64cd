"""GPU check: every CUDA path against its CPU one on the same inputs, then GPU throughput.

    python bench/gpu_check.py                     # at most ~8 minutes on one GPU
    python bench/gpu_check.py --peak-tflops 989   # when the device's name is not in PEAK_BF16

(a) Correctness (each line says pass / FAIL with its tolerance):
  features  a seeded random ViT-S/8 through the features stage on both devices: the stored
            float16 keys differ by at most 2^-7 (bf16's resolution) x their largest magnitude
  CRF       the torch CRF against pydensecrf on the same unaries: pixel agreement >= 98 %
  training  one context_aware step (ResNet-50 + FPN, PSG + CAE, 320 px) on CUDA with bf16
            autocast against the same step in fp32 on the CPU: total loss within 2 %, finite
            gradients whose cosine with the CPU's is >= 0.95
  crops     DatUS²'s crop embedding (unit CLS of masked segment crops) within 2^-7
(b) Throughput on the GPU: features img/s of ViT-S/8 and ViT-B/8 at 448 px (the forward in
    fp32 as the stage runs it, and under bf16 autocast) with the achieved fraction of the
    device's peak bf16 FLOP/s; torch CRF img/s against one-process pydensecrf; context_aware
    training img/s.

Without CUDA it says so, runs the CPU half (features on the CPU, torch CRF on the CPU
against pydensecrf, one fp32 training step, crop embedding) at small sizes, and exits 0.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crf import PRESETS, load_images, patch_scores  # bench/crf.py
from features import vit_flops_per_image  # bench/features.py

from usseg.artifacts.features import open_features
from usseg.artifacts.prepared import PreparedDataset
from usseg.artifacts.upsample import upsample_scores
from usseg.backbones.extractor import build_backbone, normalize
from usseg.datasets import demo
from usseg.features.extract import extract_features
from usseg.features.params import FeatureParams
from usseg.job_args import typed_params
from usseg.methods.context_aware.data import WarpedImages
from usseg.methods.context_aware.model import build_model
from usseg.methods.context_aware.params import TrainParams
from usseg.methods.context_aware.train import clustering_pass, step_losses, to_unit
from usseg.methods.datus2.crops import crop_transform, crops_to_batch, resize_image, segment_crops
from usseg.refine.crf_reference import dense_crf
from usseg.refine.crf_torch import batches, dense_crf_batch
from usseg.refine.image import unary
from usseg.rehearsal.checkpoints import save_release, vit_release

REPO = Path(__file__).resolve().parents[1]
BF16_TOLERANCE = 2.0**-7
CRF_AGREEMENT = 0.98
LOSS_TOLERANCE, GRAD_COSINE = 0.02, 0.95
PEAK_BF16 = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}
failures: list[str] = []


def check(name: str, ok: bool, detail: str) -> None:
    print(f"  {'pass' if ok else 'FAIL'}  {name:9s} {detail}", flush=True)
    if not ok:
        failures.append(name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call after a warm-up call."""
    fn()
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def demo_split(root: Path, n: int, side: int) -> Path:
    out = root / f"demo{n}_{side}"
    params = demo.DemoParams(split="val", seed=0, min_side=side, max_side=side, splits={"val": n})
    demo.prepare(None, out, params)
    return out


def random_vit(root: Path, backbone: str) -> Path:
    return save_release(vit_release(backbone, seed=0), root / f"{backbone}.pth")


def features_check(root: Path, dataset: Path, weights: Path, size: int, cuda: bool) -> None:
    """The stage itself on each device; the stored keys compared."""
    stores = {}
    for device in ["cpu", "cuda"] if cuda else ["cpu"]:
        params = FeatureParams(image_size=size, facet="keys", batch_size=8, device=device, split="val")
        start = time.perf_counter()
        path = extract_features(dataset, "dino_vits8", weights, root / f"features_{device}.zarr", params)
        n = len(PreparedDataset(dataset).records("val"))
        print(f"  features stage on {device}: {n / (time.perf_counter() - start):.2f} img/s "
              f"(ViT-S/8, {size} px, incl. model build)")  # fmt: skip
        stores[device] = open_features(path)["patch"].values.astype(np.float32)
    if cuda:
        ref, got = stores["cpu"], stores["cuda"]
        diff, scale = float(np.abs(got - ref).max()), float(np.abs(ref).max())
        check("features", diff <= BF16_TOLERANCE * scale,
              f"max |keys cuda - cpu| = {diff:.4g} (tolerance {BF16_TOLERANCE * scale:.4g} = 2^-7 x {scale:.3g})")  # fmt: skip


def crf_inputs(n: int) -> tuple[list[np.ndarray], list[np.ndarray], list[tuple[int, int]]]:
    images, truths, k = load_images("demo", n)
    rng = np.random.default_rng(0)
    probs = [upsample_scores(patch_scores(t, k, rng, 0.5), *t.shape) for t in truths]
    return images, [unary(p, 1e-5) for p in probs], [t.shape for t in truths]


def torch_crf(images: list[np.ndarray], unaries: list[np.ndarray], shapes: list[tuple[int, int]],
              device: torch.device, batch: int) -> list[np.ndarray]:  # fmt: skip
    out: list[np.ndarray] = [np.empty(0)] * len(images)
    for group in batches(shapes, batch, unaries[0].shape[0]):
        q = dense_crf_batch(np.stack([images[i] for i in group]), np.stack([unaries[i] for i in group]),
                            PRESETS["stego"], device)  # fmt: skip
        for i, lab in zip(group, q.argmax(1).to(torch.uint8).cpu().numpy(), strict=True):
            out[i] = lab
    return out


def crf_check(n: int, device: torch.device) -> None:
    images, unaries, shapes = crf_inputs(n)
    start = time.perf_counter()
    ref = [dense_crf(im, u, PRESETS["stego"]).argmax(0) for im, u in zip(images, unaries, strict=True)]
    ref_rate = n / (time.perf_counter() - start)
    got: list[np.ndarray] = []

    def run() -> None:
        got[:] = torch_crf(images, unaries, shapes, device, 8)

    rate = n / timed(run, device)
    agree = float(np.mean(np.concatenate([(a == b).ravel() for a, b in zip(got, ref, strict=True)])))
    check("CRF", agree >= CRF_AGREEMENT, f"torch CRF on {device} vs pydensecrf: {100 * agree:.3f} % of pixels agree "
          f"(>= {100 * CRF_AGREEMENT:.0f} %), {n} images of 320 px")  # fmt: skip
    print(f"  throughput: torch CRF on {device} {rate:.2f} img/s, pydensecrf (1 process) {ref_rate:.2f} img/s "
          f"-> {rate / ref_rate:.2f}x")  # fmt: skip


def training_params(size: int, batch: int, device: str) -> TrainParams:
    params = yaml.safe_load((REPO / "params.yaml").read_text())["context_aware"]
    return typed_params(TrainParams, {**params, "checkpoint": None, "image_size": size, "batch_size": batch,
                                      "cluster_batch_size": batch, "cluster_init_batches": 1, "workers": 0,
                                      "device": device, "amp": device == "cuda"}, "context_aware")  # fmt: skip


def one_step(model: torch.nn.Module, images: WarpedImages, params: TrainParams, device: torch.device,
             centroids: torch.Tensor, targets: object) -> tuple[float, torch.Tensor]:  # fmt: skip
    """(loss, flattened gradient) of the first training batch; the views' generator is seeded."""
    model.train()
    index = torch.arange(params.batch_size)
    x = torch.stack([images[int(i)][1] for i in index])
    loss, _ = step_losses(model, to_unit(x, device), index, centroids, targets, params,
                          torch.Generator().manual_seed(0))  # fmt: skip
    model.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad.float().flatten().cpu() for p in model.parameters() if p.grad is not None]
    return loss.item(), torch.cat(grads)


def training_check(dataset: Path, size: int, batch: int, cuda: bool) -> None:
    ds = PreparedDataset(dataset)
    images = WarpedImages(ds, ds.records("val"), size)
    cpu_params = training_params(size, batch, "cpu")
    torch.manual_seed(0)
    model = build_model(cpu_params)
    k = len(ds.classes)
    centroids, _, targets = clustering_pass(model, images, cpu_params, k, 0, torch.device("cpu"))
    start = time.perf_counter()
    loss_cpu, grad_cpu = one_step(model, images, cpu_params, torch.device("cpu"), centroids, targets)
    print(f"  training step on cpu (fp32): loss {loss_cpu:.4f}, {batch / (time.perf_counter() - start):.2f} img/s "
          f"(ResNet-50 + FPN, {size} px, batch {batch})")  # fmt: skip
    if not cuda:
        check(
            "training",
            bool(torch.isfinite(grad_cpu).all()),
            "fp32 step on the CPU: finite loss and gradients",
        )
        return
    gpu_params, dev = training_params(size, batch, "cuda"), torch.device("cuda")
    gpu_model = copy.deepcopy(model).to(dev)
    loss_gpu, grad_gpu = one_step(gpu_model, images, gpu_params, dev, centroids, targets)
    rel = abs(loss_gpu - loss_cpu) / abs(loss_cpu)
    cos = float(torch.nn.functional.cosine_similarity(grad_gpu, grad_cpu, dim=0))
    check("training", rel <= LOSS_TOLERANCE and cos >= GRAD_COSINE and bool(torch.isfinite(grad_gpu).all()),
          f"bf16 autocast step: loss {loss_gpu:.4f} vs {loss_cpu:.4f} ({100 * rel:.2f} %, <= 2 %), "
          f"gradient cosine {cos:.4f} (>= {GRAD_COSINE})")  # fmt: skip


def crops_check(dataset: Path, weights: Path, cuda: bool) -> None:
    ds = PreparedDataset(dataset)
    grid, patch = 28, 8
    segments = np.arange(grid)[:, None] // 7 * 4 + np.arange(grid)[None, :] // 7  # 16 square segments
    crops = []
    for record in ds.records("val")[:2]:
        image = resize_image(ds.load_image(record), (grid * patch, grid * patch))
        crops.extend(segment_crops(image, segments, patch))
    batch = crops_to_batch(crops, crop_transform())
    out = {}
    for device in ["cpu", "cuda"] if cuda else ["cpu"]:
        model = build_backbone("dino_vits8", weights, device=device)
        with torch.inference_mode():
            seconds = timed(lambda m=model, d=device: m.cls_token(batch.to(d)), torch.device(device))
            cls = model.cls_token(batch.to(device)).float()
        out[device] = torch.nn.functional.normalize(cls, dim=1).cpu()
        print(f"  crop embedding on {device}: {len(batch) / seconds:.1f} crops/s (ViT-S/8, 224 px crops)")
    if cuda:
        diff = float((out["cuda"] - out["cpu"]).abs().max())
        check("crops", diff <= BF16_TOLERANCE, f"max |unit CLS cuda - cpu| = {diff:.4g} (<= 2^-7)")


def features_throughput(root: Path, peak: float) -> None:
    dev = torch.device("cuda")
    for backbone, batch in (("dino_vits8", 32), ("dino_vitb8", 16)):
        model = build_backbone(backbone, random_vit(root, backbone), device=dev)
        x = normalize(np.random.default_rng(0).integers(0, 256, (batch, 448, 448, 3), dtype=np.uint8)).to(dev)
        flops = vit_flops_per_image(model, (448 // 8) ** 2 + 1)
        for label, amp in (("fp32 (the stage)", False), ("bf16 autocast", True)):

            def forward(m=model, a=amp, x=x) -> None:
                with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=a):
                    for _ in range(4):
                        m(x, facet="keys")

            rate = 4 * batch / timed(forward, dev)
            achieved = rate * flops / 1e12
            print(f"  features {backbone} 448 px {label:17s}: {rate:8.1f} img/s, {achieved:6.1f} TFLOP/s"
                  + (f" = {achieved / peak:.1%} of peak bf16 ({peak:.0f})" if peak else ""))  # fmt: skip


def training_throughput(dataset: Path, steps: int = 4, batch: int = 32) -> None:
    dev = torch.device("cuda")
    ds = PreparedDataset(dataset)
    params = training_params(320, batch, "cuda")
    images = WarpedImages(ds, ds.records("val"), 320)
    torch.manual_seed(0)
    model = build_model(params).to(dev)
    centroids, _, targets = clustering_pass(model, images, params, len(ds.classes), 0, dev)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = to_unit(torch.stack([images[i % len(images)][1] for i in range(batch)]), dev)
    index = torch.arange(batch) % len(images)
    gen = torch.Generator().manual_seed(0)

    def run() -> None:
        for _ in range(steps):
            loss, _ = step_losses(model, x, index, centroids, targets, params, gen)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()

    rate = steps * batch / timed(run, dev)
    print(f"  context_aware training (ResNet-50 + FPN, 320 px, batch {batch}, bf16): {rate:.1f} img/s "
          f"-> {49629 / rate / 60:.1f} min per COCO-Stuff train epoch (training pass only)")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--peak-tflops", type=float, default=0.0, help="peak dense bf16 TFLOP/s (default: by name)"
    )
    args = ap.parse_args()
    cuda = torch.cuda.is_available()
    began = time.perf_counter()
    if cuda:
        name = torch.cuda.get_device_name()
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16.items() if k in name), 0.0)
        print(f"device: {name}, torch {torch.__version__}, CUDA {torch.version.cuda}, peak bf16 "
              f"{peak or 'unknown (pass --peak-tflops)'} TFLOP/s")  # fmt: skip
    else:
        peak = 0.0
        print(f"no CUDA device (torch {torch.__version__}): the CUDA comparisons and the GPU throughput are not run; "
              f"the CPU half runs at small sizes")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="usseg-gpu-check-") as tmp:
        root = Path(tmp)
        print("(a) correctness", flush=True)
        weights = random_vit(root, "dino_vits8")
        features_check(root, demo_split(root, 16 if cuda else 4, 320), weights, 224, cuda)
        crf_check(16 if cuda else 4, torch.device("cuda" if cuda else "cpu"))
        train_set = demo_split(root, 8, 320)
        training_check(train_set, 320 if cuda else 128, 8 if cuda else 2, cuda)
        crops_check(train_set, weights, cuda)
        if cuda:
            print("(b) throughput", flush=True)
            features_throughput(root, peak)
            training_throughput(train_set)
    print(f"{len(failures)} check(s) failed{': ' + ', '.join(failures) if failures else ''}; "
          f"{time.perf_counter() - began:.0f} s")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
