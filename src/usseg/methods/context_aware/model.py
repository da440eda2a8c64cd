"""The embedding network: a dense trunk, the optional CAE, and a projection head.

Trunks: ResNet-18/-50 + FPN at stride 4 (torchvision, trained; optionally initialised
from a self-supervised checkpoint file), or one of the project's ViT backbones, frozen,
whose patch tokens feed the trainable layers. The network takes RGB in [0, 1] (the CAE
needs the colours) and returns B x dim x h x w embeddings, not yet normalised.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from usseg.errors import UssegError
from usseg.methods.context_aware.cae import ContextAwareEmbedding
from usseg.methods.context_aware.params import TrainParams

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESNET_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet50": (256, 512, 1024, 2048)}
# Wrappers that self-supervised releases put around a torchvision ResNet state dict.
CHECKPOINT_NESTS = ("teacher", "state_dict", "model", "student")
CHECKPOINT_PREFIXES = ("module.", "backbone.", "encoder_q.", "encoder.", "model.")


def _normalise_input(rgb: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


def resnet_state_from_checkpoint(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Unwrap DINO / MoCo / plain checkpoints to torchvision ResNet key names (no ``fc``)."""
    while isinstance(obj, Mapping):
        nest = next((k for k in CHECKPOINT_NESTS if isinstance(obj.get(k), Mapping)), None)
        if nest is None:
            break
        obj = obj[nest]
    if not isinstance(obj, Mapping):
        raise UssegError(f"checkpoint {path}: expected a state dict, got {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for prefix in CHECKPOINT_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        if not key.startswith(("fc.", "head.")):
            state[key] = value
    return state


# Where the paper preset's init checkpoint is published (docs/methods/context_aware.md).
DINO_RESNET50_URL = "https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth"


def load_resnet_checkpoint(resnet: nn.Module, path: str | Path) -> None:
    """Initialise ``resnet`` from a self-supervised checkpoint file (tensors only)."""
    path = Path(path)
    if not path.is_file():
        raise UssegError(
            f"params context_aware.checkpoint: {path} does not exist; place the self-supervised ResNet"
            f" checkpoint there (DINO's ResNet-50: {DINO_RESNET50_URL}) or set it to null for random init"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or damaged files
        raise UssegError(f"params context_aware.checkpoint: cannot load {path}: {exc}") from exc
    state = resnet_state_from_checkpoint(obj, path)
    expected = {k for k in resnet.state_dict() if not k.startswith("fc.")}
    missing = sorted(expected - state.keys())
    if missing:
        raise UssegError(
            f"checkpoint {path} lacks {len(missing)} ResNet tensors (e.g. {missing[:3]}); "
            "is it a checkpoint of this params context_aware.arch?"
        )
    try:
        resnet.load_state_dict({k: state[k] for k in expected}, strict=False)
    except RuntimeError as exc:
        raise UssegError(f"checkpoint {path} does not fit params context_aware.arch: {exc}") from exc
    log.info("initialised the ResNet from %s", path)


class FPN(nn.Module):
    """Top-down pathway (lateral 1x1 convs, upsample + add) ending at the finest level."""

    def __init__(self, in_channels: Sequence[int], dim: int) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, dim, kernel_size=1) for c in in_channels)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.lateral[-1](levels[-1])
        for lateral, x in zip(reversed(self.lateral[:-1]), reversed(levels[:-1])):
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False) + lateral(x)
        return out


class ResNetFPN(nn.Module):
    """ResNet layers 1-4 into an FPN: stride-4 features of ``fpn_dim`` channels."""

    def __init__(self, arch: str, fpn_dim: int, checkpoint: str | None) -> None:
        super().__init__()
        resnet = getattr(torchvision.models, arch)(weights=None)
        if checkpoint:
            load_resnet_checkpoint(resnet, checkpoint)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layers = nn.ModuleList([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
        self.fpn = FPN(RESNET_CHANNELS[arch], fpn_dim)
        self.out_channels = fpn_dim

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        x = self.stem(_normalise_input(rgb))
        levels = []
        for layer in self.layers:
            x = layer(x)
            levels.append(x)
        return self.fpn(levels)


class FrozenViT(nn.Module):
    """A project ViT backbone, frozen: its last-block patch tokens as a feature map."""

    def __init__(self, backbone: str, weights: str | Path, facet: str) -> None:
        super().__init__()
        from usseg.backbones.extractor import build_backbone

        self.vit = build_backbone(backbone, Path(weights), device="cpu")
        self.vit.requires_grad_(False)
        self.facet = facet
        self.patch_size = int(self.vit.patch_size)
        self.out_channels = int(self.vit.embed_dim)

    def train(self, mode: bool = True) -> FrozenViT:
        super().train(mode)
        self.vit.eval()  # frozen: never switch its dropout / norms to training behaviour
        return self

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        if rgb.shape[-1] % self.patch_size or rgb.shape[-2] % self.patch_size:
            raise UssegError(
                f"params context_aware.image_size={rgb.shape[-1]} is not a multiple of the ViT patch size "
                f"{self.patch_size}"
            )
        with torch.no_grad():
            tokens = self.vit(_normalise_input(rgb), facet=self.facet)["patch"]
        return tokens.permute(0, 3, 1, 2).contiguous()


class Embedder(nn.Module):
    """trunk -> [CAE] -> projection head (1x1 conv, ReLU, 1x1 conv) to ``dim`` channels."""

    def __init__(self, trunk: nn.Module, dim: int, cae: Mapping[str, Any] | None) -> None:
        super().__init__()
        self.trunk = trunk
        channels = trunk.out_channels
        self.cae = (
            ContextAwareEmbedding(
                channels, cae["window"], cae["sigma_spatial"], cae["sigma_colour"], cae["use_global"]
            )
            if cae
            else None
        )
        self.head = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, dim, kernel_size=1),
        )

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        features = self.trunk(rgb)
        if self.cae is not None:
            features = self.cae(features, rgb)
        return self.head(features)

    def frozen_prefixes(self) -> tuple[str, ...]:
        """State-dict prefixes that are never trained (rebuilt from their own weights file)."""
        return ("trunk.vit.",) if isinstance(self.trunk, FrozenViT) else ()


def build_model(
    params: TrainParams, backbone: str | None = None, weights: str | Path | None = None
) -> Embedder:
    """The network ``params`` describe; ``backbone``/``weights`` for arch=vit."""
    if params.arch in RESNET_CHANNELS:
        trunk: nn.Module = ResNetFPN(params.arch, params.fpn_dim, params.checkpoint)
    elif params.arch == "vit":
        if backbone is None or weights is None:
            raise UssegError(
                "params context_aware.arch=vit needs the experiment's backbone and its weights file"
            )
        trunk = FrozenViT(backbone, weights, params.vit_facet)
    else:
        raise UssegError(f"params context_aware.arch={params.arch!r}: expected resnet18, resnet50 or vit")
    cae = None
    if params.cae:
        cae = {
            "window": params.cae_window,
            "sigma_spatial": params.cae_sigma_spatial,
            "sigma_colour": params.cae_sigma_colour,
            "use_global": params.cae_global,
        }
    return Embedder(trunk, params.dim, cae)


def trainable_state(model: Embedder) -> dict[str, torch.Tensor]:
    """The state dict without frozen parts, which is what checkpoints need to hold."""
    skip = model.frozen_prefixes()
    return {k: v for k, v in model.state_dict().items() if not k.startswith(skip)}


def load_trainable_state(model: Embedder, state: Mapping[str, torch.Tensor], source: Path) -> None:
    missing, unexpected = model.load_state_dict(dict(state), strict=False)
    missing = [k for k in missing if not k.startswith(model.frozen_prefixes())]
    if missing or unexpected:
        raise UssegError(
            f"{source} does not fit the network params context_aware describe "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
