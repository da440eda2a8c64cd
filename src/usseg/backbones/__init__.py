"""Self-supervised ViT backbones: registry, checkpoint conversion and the feature extractor.

Names resolve lazily so that ``usseg validate`` (which needs only the registry) does not
import torch and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BACKBONES": "usseg.backbones.registry",
    "BackboneSpec": "usseg.backbones.registry",
    "get_spec": "usseg.backbones.registry",
    "IMAGENET_MEAN": "usseg.backbones.extractor",
    "IMAGENET_STD": "usseg.backbones.extractor",
    "ViTExtractor": "usseg.backbones.extractor",
    "build_backbone": "usseg.backbones.extractor",
    "normalize": "usseg.backbones.extractor",
}
__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BackboneSpec",
    "ViTExtractor",
    "build_backbone",
    "get_spec",
    "normalize",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
