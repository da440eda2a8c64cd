"""Checkpoints in their official release formats, with seeded random weights.

DINO's ``dino_*_pretrain.pth`` is the ViT's plain state dict (timm's key names); DINOv2's
``dinov2_*_pretrain.pth`` adds ``mask_token``, keeps the CLS position in ``pos_embed`` and,
for the register models, stores ``register_tokens``; DINO's ``dino_resnet50_pretrain.pth``
is a torchvision ResNet-50 without ``fc``. Weights come from each architecture's own
initialisation under a fixed seed, so the features are finite and the files reproducible.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from usseg.artifacts.atomic import atomic_file
from usseg.backbones.registry import BackboneSpec, create_timm_model, get_spec


def dinov2_release_layout(timm_sd: dict[str, Tensor], spec: BackboneSpec, seed: int) -> dict[str, Tensor]:
    """timm keys -> the DINOv2 hub release's (the inverse of what the weights stage reads)."""
    gen = torch.Generator().manual_seed(seed)
    sd = dict(timm_sd)
    sd["mask_token"] = torch.zeros(1, spec.embed_dim)
    if spec.num_registers:
        cls_pos = 0.02 * torch.randn(1, 1, spec.embed_dim, generator=gen)
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - cls_pos
        sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    return sd


def smooth_positions(grid: int, dim: int, seed: int, waves: int = 8, scale: float = 1.0) -> Tensor:
    """(grid * grid, dim) position embeddings made of a few low-frequency plane waves.

    A ViT at its own initialisation gives every patch nearly the same key (the image's
    common component dominates), so DatUS²'s raw-key graph is complete and has no segment,
    and every level of clustering sees one blob. Smooth, zero-mean positions of unit scale
    make neighbouring patches alike and distant ones unlike, as trained ViTs' keys are.
    """
    gen = torch.Generator().manual_seed(seed)
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    where = torch.stack([rows, cols], -1).reshape(-1, 2).float() / grid
    freqs = torch.randint(1, 4, (waves, 2), generator=gen).float() * torch.sign(
        torch.randn(waves, 2, generator=gen)
    )
    phases = 2 * torch.pi * torch.rand(waves, generator=gen)
    basis = torch.cos(2 * torch.pi * where @ freqs.T + phases)  # (grid^2, waves)
    mixing = torch.randn(waves, dim, generator=gen) / waves**0.5
    pos = basis @ mixing
    return scale * (pos - pos.mean(0)) / pos.std()


def vit_release(backbone: str, seed: int) -> dict[str, Tensor]:
    """A random ViT of ``backbone``'s architecture in its release's layout."""
    spec = get_spec(backbone)
    torch.manual_seed(seed)
    sd = {k: v.detach().clone() for k, v in create_timm_model(spec).state_dict().items()}
    grid = spec.img_size // spec.patch_size
    prefix = sd["pos_embed"].shape[1] - grid * grid  # the CLS position, when the model has one
    patches = smooth_positions(grid, spec.embed_dim, seed)[None]
    sd["pos_embed"] = torch.cat([sd["pos_embed"][:, :prefix], patches], dim=1)
    return dinov2_release_layout(sd, spec, seed) if spec.family == "dinov2" else sd


def resnet50_release(seed: int) -> dict[str, Tensor]:
    """A random torchvision ResNet-50 without ``fc``, as DINO released its ResNet-50."""
    import torchvision

    torch.manual_seed(seed)
    sd = torchvision.models.resnet50(weights=None).state_dict()
    return {k: v.detach().clone() for k, v in sd.items() if not k.startswith("fc.")}


def save_release(sd: dict[str, Tensor], path: Path) -> Path:
    """``torch.save`` as the releases are saved (a zip-format pickle of tensors only)."""
    with atomic_file(path, "wb") as fh:
        torch.save(sd, fh)
    return path
