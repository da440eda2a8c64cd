"""Backbones by name: which timm architecture, which pretrained tag, which token layout.

The names are what params.yaml and experiments use; everything else in the package asks
this table instead of parsing model names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from usseg.errors import UssegError

if TYPE_CHECKING:  # torch and timm load lazily: validating params.yaml needs only the names
    import torch
    from timm.models.vision_transformer import VisionTransformer


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: the timm architecture plus what callers need to lay out its tokens."""

    name: str
    timm_name: str
    patch_size: int
    embed_dim: int
    num_heads: int
    num_prefix_tokens: int  # CLS + register tokens in front of the patch tokens
    timm_pretrained_tag: str | None  # None: weights come from elsewhere (offline source)
    family: str  # "dino" | "dinov2": which release format and position grid

    @property
    def img_size(self) -> int:
        """Size the position grid was trained at: 37x37 for DINOv2 (518 px), 14x14/28x28 for DINO."""
        return 518 if self.family == "dinov2" else 224

    @property
    def num_registers(self) -> int:
        return self.num_prefix_tokens - 1

    @property
    def pretrained_name(self) -> str:
        return f"{self.timm_name}.{self.timm_pretrained_tag}"


def _dino(name: str, timm_name: str, patch: int, dim: int, heads: int) -> BackboneSpec:
    return BackboneSpec(name, timm_name, patch, dim, heads, 1, "dino", "dino")


def _dinov2(name: str, timm_name: str, dim: int, heads: int, registers: int = 0) -> BackboneSpec:
    return BackboneSpec(name, timm_name, 14, dim, heads, 1 + registers, "lvd142m", "dinov2")


IMGFOCUS = "dinov2_vits14_imgfocus"

BACKBONES: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        _dino("dino_vits16", "vit_small_patch16_224", 16, 384, 6),
        _dino("dino_vits8", "vit_small_patch8_224", 8, 384, 6),
        _dino("dino_vitb16", "vit_base_patch16_224", 16, 768, 12),
        _dino("dino_vitb8", "vit_base_patch8_224", 8, 768, 12),
        _dinov2("dinov2_vits14", "vit_small_patch14_dinov2", 384, 6),
        _dinov2("dinov2_vitb14", "vit_base_patch14_dinov2", 768, 12),
        _dinov2("dinov2_vits14_reg", "vit_small_patch14_reg4_dinov2", 384, 6, registers=4),
        _dinov2("dinov2_vitb14_reg", "vit_base_patch14_reg4_dinov2", 768, 12, registers=4),
        BackboneSpec(IMGFOCUS, "vit_small_patch14_dinov2", 14, 384, 6, 1, None, "dinov2"),
    )
}


def get_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise UssegError(f"unknown backbone {name!r} (known: {sorted(BACKBONES)})")
    return BACKBONES[name]


def create_timm_model(
    spec: BackboneSpec, pretrained: bool = False, device: str | torch.device = "cpu"
) -> VisionTransformer:
    """The timm model without a classifier head, accepting any multiple of the patch size."""
    import timm
    import torch

    name = spec.pretrained_name if pretrained else spec.timm_name
    with torch.device(device):
        return timm.create_model(
            name, pretrained=pretrained, num_classes=0, dynamic_img_size=True, img_size=spec.img_size
        )
