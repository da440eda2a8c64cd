"""Dense-CRF benchmark: pydensecrf (1 process, all cores) vs the torch CRF (CPU, GPU).

All four are timed in one run on the same images and the same unaries; the torch CRF's
label maps are compared with pydensecrf's (pixel agreement) and with the ground truth
(mIoU, each against the truth, and their difference).

Soft scores are made from the ground truth the way a method's output looks: per-patch
class fractions on a 16 x 16 grid (the features stage's 224 px / 14 px patches), mixed
with Dirichlet noise, bilinearly upsampled to the image (usseg.artifacts.upsample).

    python bench/crf.py                     # VOC sample if ../shared/data exists, else demo images
    python bench/crf.py --images demo --n 24 --preset dsm
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from usseg.artifacts.prepared import read_label, read_rgb
from usseg.artifacts.upsample import upsample_scores
from usseg.refine.crf_reference import dense_crf
from usseg.refine.image import unary
from usseg.refine.params import CRFParams

REPO = Path(__file__).resolve().parents[1]
VOC = REPO.parent / "shared/data/voc2012-sample/VOCdevkit/VOC2012"
PRESETS = {
    "stego": CRFParams(10, 1, 3, 67, 3, 4),
    "dsm": CRFParams(5, 3, 3, 80, 13, 10),
}
GRID = 16


def load_images(source: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """(images, ground-truth maps, number of classes)."""
    if source == "voc":
        ids = (VOC / "ImageSets/Segmentation/val.txt").read_text().split()[:n]
        images = [read_rgb(VOC / "JPEGImages" / f"{i}.jpg") for i in ids]
        labels = [read_label(VOC / "SegmentationClass" / f"{i}.png") for i in ids]
        return images, labels, 21
    from usseg.datasets.demo import CLASSES, generate

    pairs = [generate(i, seed=0, min_side=320, max_side=480) for i in range(n)]
    return [p[0] for p in pairs], [p[1] for p in pairs], len(CLASSES)


def patch_scores(label: np.ndarray, k: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    """(K, GRID, GRID) class fractions per patch (void ignored), mixed with Dirichlet noise."""
    h, w = label.shape
    rows = np.minimum(np.arange(h) * GRID // h, GRID - 1)
    cols = np.minimum(np.arange(w) * GRID // w, GRID - 1)
    cell = (rows[:, None] * GRID + cols[None, :]).ravel()
    valid = label.ravel() != 255
    counts = np.zeros((GRID * GRID, k))
    np.add.at(counts, (cell[valid], label.ravel()[valid]), 1.0)
    total = counts.sum(1, keepdims=True)
    frac = np.where(total > 0, counts / np.maximum(total, 1), 1.0 / k)
    mixed = (1 - noise) * frac + noise * rng.dirichlet(np.full(k, 0.5), GRID * GRID)
    return mixed.T.reshape(k, GRID, GRID).astype(np.float32)


def miou(preds: list[np.ndarray], truths: list[np.ndarray], k: int) -> float:
    """Mean IoU over the classes present in the ground truth (labels are class ids here)."""
    conf = np.zeros((k, k), np.int64)
    for p, t in zip(preds, truths, strict=True):
        valid = t != 255
        conf += np.bincount(t[valid].astype(np.int64) * k + p[valid], minlength=k * k).reshape(k, k)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    present = conf.sum(1) > 0
    return float((inter[present] / np.maximum(union[present], 1)).mean())


def timed(fn: Callable[[], list[np.ndarray]], n: int) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    out = fn()
    return n / (time.perf_counter() - start), out


_PARAMS: CRFParams | None = None


def _pool_init(params: CRFParams) -> None:
    global _PARAMS
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    _PARAMS = params


def _pool_work(path: str) -> np.ndarray:
    """A worker reads its own image and unary (nothing big crosses the pipe)."""
    assert _PARAMS is not None
    data = np.load(path)
    return dense_crf(data["image"], data["unary"], _PARAMS).argmax(0).astype(np.uint8)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", choices=["auto", "voc", "demo"], default="auto")
    p.add_argument("--n", type=int, default=15, help="number of images")
    p.add_argument("--preset", choices=sorted(PRESETS), default="stego")
    p.add_argument("--noise", type=float, default=0.5, help="Dirichlet mixing weight of the scores")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="processes for (b)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="CPU threads for (c); more than the idle cores makes OpenMP barriers crawl")
    p.add_argument("--batch", type=int, default=8, help="same-size images per GPU batch")
    args = p.parse_args(argv)

    import torch

    from usseg.refine.crf_torch import batches, dense_crf_batch

    source = args.images if args.images != "auto" else ("voc" if VOC.is_dir() else "demo")
    images, truths, k = load_images(source, args.n)
    rng = np.random.default_rng(0)
    probs = [upsample_scores(patch_scores(t, k, rng, args.noise), *t.shape) for t in truths]
    unaries = [unary(pr, 1e-5) for pr in probs]
    params = PRESETS[args.preset]
    n = len(images)
    pixels = sum(t.size for t in truths)
    print(f"{n} images ({source}, {pixels / n / 1e3:.0f} kpx mean), K={k}, preset {args.preset} "
          f"({params.iterations} iterations), {os.cpu_count()} cores, torch {torch.__version__}")

    rates: dict[str, float] = {}
    maps: dict[str, list[np.ndarray]] = {}
    rates["a"], maps["a"] = timed(
        lambda: [dense_crf(im, u, params).argmax(0).astype(np.uint8) for im, u in zip(images, unaries, strict=True)], n
    )
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (im, u) in enumerate(zip(images, unaries, strict=True)):
            paths.append(f"{tmp}/{i}.npz")
            np.savez(paths[-1], image=im, unary=u)
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_pool_init, initargs=(params,)) as pool:
            pool.map(_pool_work, paths[: args.workers])  # start-up and imports not timed
            rates["b"], maps["b"] = timed(lambda: pool.map(_pool_work, paths, chunksize=1), n)

    def run_torch(device: torch.device, batch: int) -> list[np.ndarray]:
        out: list[np.ndarray | None] = [None] * n
        for group in batches([t.shape for t in truths], batch, k):
            q = dense_crf_batch(
                np.stack([images[i] for i in group]), np.stack([unaries[i] for i in group]), params, device
            )
            labels = q.argmax(1).to(torch.uint8).cpu().numpy()
            for i, lab in zip(group, labels, strict=True):
                out[i] = lab
        return [o for o in out if o is not None]

    torch.set_num_threads(args.torch_threads)
    run_torch(torch.device("cpu"), 1)  # warm-up (allocator, thread pool)
    rates["c"], maps["c"] = timed(lambda: run_torch(torch.device("cpu"), 1), n)
    if torch.cuda.is_available():
        cuda = torch.device("cuda")
        run_torch(cuda, args.batch)
        torch.cuda.synchronize()
        rates["d"], maps["d"] = timed(lambda: run_torch(cuda, args.batch), n)  # .cpu() synchronises

    names = {
        "a": "pydensecrf, 1 process",
        "b": f"pydensecrf, {args.workers} processes",
        "c": f"torch CRF, CPU ({args.torch_threads} threads)",
        "d": f"torch CRF, GPU ({torch.cuda.get_device_name() if torch.cuda.is_available() else ''})",
    }
    ref_miou = miou(maps["a"], truths, k)
    before = [pr.argmax(0) for pr in probs]
    changed = np.mean(np.concatenate([(x != y).ravel() for x, y in zip(before, maps["a"], strict=True)]))
    print(f"mIoU without CRF {100 * miou(before, truths, k):.2f}, with pydensecrf {100 * ref_miou:.2f} "
          f"(the CRF changed {100 * changed:.1f}% of pixels)")
    print(f"{'':38s} {'img/s':>8s} {'x (a)':>7s} {'agree':>9s} {'mIoU':>7s} {'dmIoU':>7s}")
    for key, name in names.items():
        if key not in rates:
            print(f"({key}) torch CRF, GPU: no GPU")
            continue
        agree = np.mean(np.concatenate([(x == y).ravel() for x, y in zip(maps[key], maps["a"], strict=True)]))
        m = miou(maps[key], truths, k)
        print(f"({key}) {name:34s} {rates[key]:8.2f} {rates[key] / rates['a']:7.2f} {100 * agree:8.4f}% "
              f"{100 * m:7.2f} {100 * (m - ref_miou):+7.3f}")
    if "d" in rates:
        print(f"GPU vs torch CPU: {rates['d'] / rates['c']:.1f}x; GPU vs all-core pydensecrf: "
              f"{rates['d'] / rates['b']:.1f}x")
    print(f"all-core scaling of pydensecrf: {rates['b'] / rates['a']:.2f}x on {args.workers} processes")


if __name__ == "__main__":
    sys.exit(main())
