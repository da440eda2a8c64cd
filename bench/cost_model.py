"""Cost model of the paper preset: every job Snakemake plans, costed from measured figures.

    python bench/cost_model.py > docs/cost_model.md

Reads the jobs from `snakemake -n -p -F --config preset=paper` (each job's own shell
command: its stage, dataset, backbone and resolved --params), the CPU measurements of
`bench/scale.py --json bench/results/scale_cocostuff_vits16.json` and
`bench/context_aware_scale.py --json bench/results/context_aware_scale.json`, and writes
per stage and dataset: jobs, images, GFLOP per image (counted by torch's FlopCounterMode
on the meta device), disk, CPU core-hours on this machine and GPU-hours on one
H100/H200-class GPU.

How each figure is made (all of it a projection until the paper preset runs):
- CPU core-hours: the stage's measured seconds per image at the bench's largest N, scaled
  to the job by the ratio of what its cost grows with (model stages: FLOPs; patch
  clustering: patches x channels [x K for k-means]; DatUS²'s graph: patches squared; CRF:
  pixels x labels x iterations), times the job's images.
- GPU-hours: model FLOPs / (GPU_FRACTION x GPU_PEAK_BF16), assuming bf16 autocast; the
  features and crop stages run fp32 today (the "fp32" column: FP32_FRACTION x GPU_PEAK_FP32).
  Stages that run on the CPU whatever the device (clustering, pydensecrf) show "CPU".
- Disk: feature stores exactly (float16 patch facets, attention and CLS, before Zarr's
  compression); the other outputs from the bench's bytes per image, scaled as their time.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from usseg.steps import methods

REPO = Path(__file__).resolve().parents[1]
GPU_PEAK_BF16, GPU_FRACTION = 989e12, 0.4  # H100/H200 SXM dense bf16; an assumed 40 % of it
GPU_PEAK_FP32, FP32_FRACTION = 67e12, 0.5
# split -> (images, mean pixels per image as the stage sees them, classes)
SPLITS = {
    ("voc2012", "val"): (1449, 500 * 375, 21),
    ("coco81", "val"): (5000, 578 * 484, 81),
    ("cocostuff27", "val"): (2175, 320 * 320, 27),
    ("cocostuff27", "train"): (49629, 320 * 320, 27),
    ("suim", "test"): (110, 640 * 480, 8),
}
EVAL_SPLIT = {"voc2012": "val", "coco81": "val", "cocostuff27": "val", "suim": "test"}
BENCH_STAGE = {  # rule -> (branch, stage) of bench/scale.py
    "features": ("shared", "features"),
    "kmeans": ("kmeans", "kmeans"),
    "multilevel_dataset": ("multilevel", "level dataset"),
    "multilevel_category": ("multilevel", "level category"),
    "multilevel_image": ("multilevel", "level image"),
    "multilevel_consistency": ("multilevel", "consistency"),
    "multilevel_label": ("multilevel", "label"),
    "datus2_segments": ("datus2", "segments"),
    "datus2_segment_features": ("datus2", "segment features"),
    "datus2_pseudolabels": ("datus2", "pseudolabels"),
    "datus2_masks": ("datus2", "masks"),
    "context_aware_predict": ("context_aware", "predict"),
}
NOT_MODELLED = ("download", "prepare", "weights", "fetch_checkpoint", "evaluate", "grid", "summary",
                "datus2_benchmark", "all")  # fmt: skip
COSTED_APART = ("refine", "context_aware_train")  # by their own rules below
# Method steps (their specs) bench/scale.py has no measurement of yet, e.g. a branch newer
# than its run: named in the table, not costed
NOT_MEASURED = tuple(s.name for m in methods().values() for s in m.steps
                     if s.name not in BENCH_STAGE and s.name not in COSTED_APART)  # fmt: skip


@dataclass
class Row:
    jobs: int = 0
    images: int = 0
    gflop: float = 0.0  # per image
    disk_gb: float = 0.0
    core_hours: float = 0.0
    gpu_hours: float | None = None
    fp32_hours: float | None = None
    notes: set[str] = field(default_factory=set)


def paper_jobs() -> list[tuple[str, list[str]]]:
    """(rule, usseg argv) of every job of the paper preset, from Snakemake's own dry run."""
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "-F", "--config", "preset=paper"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout  # fmt: skip
    jobs, rule = [], None
    for line in out.splitlines():
        if m := re.match(r"(?:local)?rule (\w+):", line):
            rule = m.group(1)
        elif line.startswith("Shell command: ") and rule and line != "Shell command: None":
            argv = shlex.split(line.removeprefix("Shell command: ").split(" 2>&1")[0])
            jobs.append((rule, argv[1:]))
            rule = None
    return jobs


def arg(argv: list[str], flag: str) -> str | None:
    return argv[argv.index(flag) + 1] if flag in argv else None


def vit_gflop(backbone: str, size: int) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from usseg.backbones.registry import create_timm_model, get_spec

    model = create_timm_model(get_spec(backbone), device="meta")
    with FlopCounterMode(display=False) as counter:
        model.forward_features(torch.empty(1, 3, size, size, device="meta"))
    return counter.get_total_flops() / 1e9


def embedder_gflop(params: dict[str, Any]) -> float:
    """Forward GFLOP of context_aware's network on one image (its trunk + CAE + head)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from usseg.job_args import typed_params
    from usseg.methods.context_aware.model import build_model
    from usseg.methods.context_aware.params import TrainParams

    typed = typed_params(TrainParams, {**params, "checkpoint": None}, "context_aware")
    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        build_model(typed)(torch.empty(1, 3, typed.image_size, typed.image_size))
    return counter.get_total_flops() / 1e9


def grid(backbone: str, size: int) -> tuple[int, int, int]:
    """(patches, channels, heads) of a backbone's features at ``size``."""
    from usseg.backbones.registry import get_spec

    spec = get_spec(backbone)
    return (size // spec.patch_size) ** 2, spec.embed_dim, spec.num_heads


class Bench:
    """The scale bench's per-image figures at its largest N, and its configuration."""

    def __init__(self, scale: dict[str, Any], ca: dict[str, Any]) -> None:
        self.scale, self.ca = scale, ca
        self.n = max(s["n"] for s in scale["stages"])
        self.at = {(s["branch"], s["stage"]): s for s in scale["stages"] if s["n"] == self.n}
        self.backbone, self.size = scale["backbone"], int(scale["image_size"])
        self.patches, self.dim, _ = grid(self.backbone, self.size)
        self.pixels, self.k = 320 * 320, 5  # the demo's synthetic COCO-Stuff-sized images, 5 classes

    @property
    def gflops_per_second(self) -> float:
        """One core's achieved model throughput: the features stage's GFLOP per image / its seconds."""
        return vit_gflop(self.backbone, self.size) / self.per_image("shared", "features")[0]

    def network_seconds(self, gflop: float) -> float:
        return gflop / self.gflops_per_second

    def per_image(self, branch: str, stage: str) -> tuple[float, float]:
        """(core seconds, disk bytes) per image."""
        s = self.at[(branch, stage)]
        processes = (
            self.scale["crf_processes"] if stage == "refine" and branch in self.scale["crf_branches"] else 1
        )
        return s["seconds"] * processes / self.n, s["disk_mb"] * 2**20 / self.n


def where(rule: str, argv: list[str], params: dict[str, Any], exp: dict[str, Any] | None) -> tuple[str, str]:
    """(dataset, split) a job reads: its arguments, else its experiment's, else its input paths'."""
    dataset_dir = arg(argv, "--dataset-dir")
    if dataset_dir:
        dataset = Path(dataset_dir).name
    elif exp:
        dataset = exp["dataset"]
    else:
        dataset = next(d for d, _ in SPLITS if f"/{d}/" in " ".join(argv))
    if rule == "features":
        return dataset, params["split"]
    if rule == "context_aware_train":
        return dataset, params["train_split"]
    return dataset, arg(argv, "--split") or EVAL_SPLIT[dataset]


def cost(rule: str, argv: list[str], bench: Bench, exps: dict[str, Any], row: Row) -> str:
    """Add one job's figures to its row; returns the job's dataset."""
    params = json.loads(arg(argv, "--params") or "{}")
    exp_file = arg(argv, "--experiment")
    exp = exps[Path(exp_file).stem] if exp_file else None
    dataset, split = where(rule, argv, params, exp)
    images, pixels, classes = SPLITS[(dataset, split)]
    backbone = arg(argv, "--backbone") or (exp["backbone"] if exp else bench.backbone)
    size = int(params.get("image_size", exp["params"]["features"]["image_size"] if exp else bench.size))
    patches, dim, heads = grid(backbone, size)
    row.jobs += 1
    row.images += images
    gflop, ratio, disk_ratio = 0.0, 1.0, 1.0
    if rule == "features":
        gflop = vit_gflop(backbone, size)
        ratio = gflop / vit_gflop(bench.backbone, bench.size)
        row.disk_gb += images * 2 * (patches * (dim + heads) + dim) / 1e9
        row.fp32_hours = (row.fp32_hours or 0.0) + images * gflop * 1e9 / (
            FP32_FRACTION * GPU_PEAK_FP32
        ) / 3600
    elif rule == "kmeans":
        k = (exp["params"]["kmeans"].get("k") if exp else None) or classes
        ratio = disk_ratio = patches * dim * k / (bench.patches * bench.dim * bench.k)
    elif rule.startswith("multilevel"):
        ratio = disk_ratio = patches * dim / (bench.patches * bench.dim)
        if rule == "multilevel_label":
            disk_ratio = pixels / bench.pixels  # label maps and panels at image resolution
    elif rule == "datus2_segments":
        ratio, disk_ratio = (patches / bench.patches) ** 2, patches / bench.patches
        row.notes.add("graph over all patch pairs: cost grows with patches squared")
    elif rule == "datus2_segment_features":
        crop = int(params["crop_size"])
        gflop = vit_gflop(backbone, crop)  # per segment
        bench_crop = int(bench.scale["settings"]["datus2"]["crop_size"])
        ratio = gflop / vit_gflop(bench.backbone, bench_crop)
        disk_ratio = dim / bench.dim
        segments = bench.scale.get("segments_per_image")
        if segments:
            gflop *= segments
            row.notes.add(f"{segments:.1f} segments per image (the bench's random ViT)")
        row.fp32_hours = (row.fp32_hours or 0.0) + images * gflop * 1e9 / (
            FP32_FRACTION * GPU_PEAK_FP32
        ) / 3600
    elif rule in ("datus2_pseudolabels", "datus2_masks"):
        ratio = disk_ratio = patches / bench.patches
    elif rule == "refine":
        crf = params["crf"]
        k = classes
        if exp and exp["method"] in ("datus2", "context_aware"):
            k = exp["params"][exp["method"]].get("k") or classes
        iterations = params["presets"][crf]["iterations"] if crf != "none" else 1
        crf_bench = bench.scale["crf_branches"][0]
        branch = crf_bench if crf != "none" else next(b for b in ("multilevel", "datus2") if b != crf_bench)
        bench_iter = 10 if crf != "none" else 1
        ratio = disk_ratio = pixels * k * iterations / (bench.pixels * bench.k * bench_iter)
        seconds, disk = bench.per_image(branch, "refine")
        row.core_hours += images * seconds * ratio / 3600
        row.disk_gb += images * disk * pixels / bench.pixels / 1e9
        row.notes.add("pydensecrf on the CPU (a torch CRF on the GPU: unmeasured)" if crf != "none" else "")
        return dataset
    elif rule == "context_aware_train":
        epochs = int(params["epochs"])
        rows = bench.ca["rows"]
        n = max(rows, key=int)
        tiny_seconds, tiny_fwd = rows[n]["train"][0] / int(n), embedder_gflop(bench.ca["params"])
        # the bench's one epoch: clustering pass, two views x (forward + backward = 3 forwards),
        # final clustering pass = 8 forwards; its time less those at the measured FLOP rate is the
        # per-epoch rest (decoding, views, k-means, PSG), which does not grow with the network
        rest = max(tiny_seconds - bench.network_seconds(8 * tiny_fwd), 0.0)
        if params["arch"] == "vit":  # frozen trunk: one forward per pass and view, no backward through it
            gflop = (3 * epochs + 1) * vit_gflop(backbone, int(params["image_size"]))
        else:
            gflop = (7 * epochs + 1) * embedder_gflop(params)
        row.core_hours += images * (epochs * rest + bench.network_seconds(gflop)) / 3600
        row.gflop = max(row.gflop, gflop)
        row.gpu_hours = (row.gpu_hours or 0.0) + images * gflop * 1e9 / (GPU_FRACTION * GPU_PEAK_BF16) / 3600
        row.disk_gb += 0.2  # final weights and one checkpoint (ResNet-50 + FPN + Adam state)
        row.notes.add(f"{epochs} epochs over {images:,} images: network at the measured CPU FLOP rate, "
                      "the rest (decoding, views, k-means, PSG) as measured at 10,000 images")  # fmt: skip
        return dataset
    elif rule == "context_aware_predict":
        net = exp["params"]["context_aware"]  # predict's --params hold only its own keys
        gflop = embedder_gflop(net) if net["arch"] != "vit" else vit_gflop(backbone, int(net["image_size"]))
        seconds, disk = bench.per_image("context_aware", "predict")
        tiny = embedder_gflop(bench.ca["params"])  # the scale bench predicted with the same tiny network
        seconds += bench.network_seconds(gflop - tiny)
        row.core_hours += images * seconds / 3600
        row.disk_gb += images * disk * classes / bench.k / 1e9
        row.gflop = gflop
        row.gpu_hours = (row.gpu_hours or 0.0) + images * gflop * 1e9 / (GPU_FRACTION * GPU_PEAK_BF16) / 3600
        return dataset
    branch, stage = BENCH_STAGE[rule]
    seconds, disk = bench.per_image(branch, stage)
    row.core_hours += images * seconds * ratio / 3600
    row.disk_gb += images * disk * disk_ratio / 1e9 if rule != "features" else 0.0
    if gflop:
        row.gflop = gflop
        row.gpu_hours = (row.gpu_hours or 0.0) + images * gflop * 1e9 / (GPU_FRACTION * GPU_PEAK_BF16) / 3600
    return dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default=str(REPO / "bench/results/scale_cocostuff_vits16.json"))
    ap.add_argument("--context-aware", default=str(REPO / "bench/results/context_aware_scale.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from usseg.params import load_params, resolve_experiments, select_preset

    params = load_params([REPO / "params.yaml"])
    params["experiments"] = "paper"
    exps = resolve_experiments(select_preset(params))
    bench = Bench(json.loads(Path(args.scale).read_text()), json.loads(Path(args.context_aware).read_text()))
    rows: dict[tuple[str, str], Row] = defaultdict(Row)
    skipped: dict[str, int] = defaultdict(int)
    unmeasured: dict[str, int] = defaultdict(int)
    for rule, argv in paper_jobs():
        if rule in NOT_MODELLED or rule in NOT_MEASURED:
            (unmeasured if rule in NOT_MEASURED else skipped)[rule] += 1
            continue
        probe = Row()
        dataset = cost(rule, argv, bench, exps, probe)
        row = rows[(rule, dataset)]
        for name in ("jobs", "images", "disk_gb", "core_hours"):
            setattr(row, name, getattr(row, name) + getattr(probe, name))
        for name in ("gpu_hours", "fp32_hours"):
            if getattr(probe, name) is not None:
                setattr(row, name, (getattr(row, name) or 0.0) + getattr(probe, name))
        row.gflop = max(row.gflop, probe.gflop)
        row.notes |= {n for n in probe.notes if n}

    s = bench.scale
    print("# Cost model of the `paper` preset (a projection until the preset runs on the real data)\n")
    print("Generated by `python bench/cost_model.py > docs/cost_model.md` from Snakemake's plan of the paper preset "
          f"and the CPU measurements in `bench/results/` (`bench/scale.py`: N up to {bench.n} synthetic "
          f"{s['shape']}-sized images, random {s['backbone']} at {s['image_size']} px, {s['cpus']} CPUs, one thread "
          f"per stage, {s['crf_processes']} processes for the CRF; `bench/context_aware_scale.py`: up to "
          f"{max(bench.ca['rows'], key=int)} training images). CPU core-hours are the measured seconds per image "
          "scaled by what each stage's cost grows with (see the script's docstring); GPU-hours assume bf16 autocast "
          f"at {GPU_FRACTION:.0%} of {GPU_PEAK_BF16 / 1e12:.0f} TFLOP/s (H100/H200 SXM dense bf16) and are "
          "**projections: no GPU has run these stages yet** (`python bench/gpu_check.py` measures them). The "
          f"features and crop stages run fp32 today: the fp32 column assumes {FP32_FRACTION:.0%} of "
          f"{GPU_PEAK_FP32 / 1e12:.0f} TFLOP/s. Disk: feature stores uncompressed float16; others from the "
          "bench's bytes per image.\n")  # fmt: skip
    print("| stage | dataset | jobs | images (all jobs) | GFLOP / image (largest job) | disk GB | CPU core-h (here) | "
          "GPU-h bf16 (projected) | GPU-h fp32 as today (projected) | notes |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    total = Row()
    for (rule, dataset), r in sorted(rows.items()):
        gpu = f"{r.gpu_hours:.3f}" if r.gpu_hours is not None else "CPU"
        fp32 = f"{r.fp32_hours:.3f}" if r.fp32_hours is not None else ""
        print(f"| {rule} | {dataset} | {r.jobs} | {r.images:,} | {r.gflop:,.1f} | {r.disk_gb:.2f} | "
              f"{r.core_hours:.2f} | {gpu} | {fp32} | {'; '.join(sorted(r.notes))} |")  # fmt: skip
        total.jobs += r.jobs
        total.disk_gb += r.disk_gb
        total.core_hours += r.core_hours
        total.gpu_hours = (total.gpu_hours or 0.0) + (r.gpu_hours or 0.0)
    cpu_only = sum(r.core_hours for r in rows.values() if r.gpu_hours is None)
    print(f"| **total** | | {total.jobs} | | | {total.disk_gb:.1f} | {total.core_hours:.1f} "
          f"(= {total.core_hours / s['cpus']:.1f} h on these {s['cpus']} cores) | "
          f"{total.gpu_hours:.2f} (+ {cpu_only:.1f} core-h of CPU stages) | | |\n")  # fmt: skip
    train_store = 49629 * 2 * sum(x * y for x, y in [(grid("dino_vits8", 320)[0], 384 + 6)]) / 1e9
    print(f"Not in the plan, for scale: COCO-Stuff-27 train features at 320 px with ViT-S/8 would take "
          f"{train_store:.0f} GB (context_aware trains on images, not on a store).\n")  # fmt: skip
    print("Not modelled (I/O or bookkeeping, seconds per job): " + ", ".join(f"{k} ({v})" for k, v in sorted(skipped.items())) + ".")  # fmt: skip
    if unmeasured:
        print("\nNot measured yet (no bench/scale.py figures; not in the totals): "
              + ", ".join(f"{k} ({v})" for k, v in sorted(unmeasured.items())) + ".")  # fmt: skip


if __name__ == "__main__":
    main()
