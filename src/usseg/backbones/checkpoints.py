"""Checkpoint files in, timm state dicts out.

Accepted: the official DINO and DINOv2 releases (plain backbone state dicts and full
training checkpoints), Hugging Face ``Dinov2Model`` state dicts, and timm's own keys.
Files are read as safetensors or with ``torch.load(weights_only=True)``: a checkpoint is
data, so nothing in it may run code.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save
from torch import Tensor

from usseg.artifacts.atomic import atomic_file
from usseg.backbones.registry import BackboneSpec, create_timm_model
from usseg.errors import UssegError

# Training checkpoints nest the model under one of these keys; the teacher is preferred
# because it is the network the DINO papers evaluate.
WRAPPERS = ("teacher", "model", "state_dict", "student")
# Prefixes that name the backbone inside a bigger module (DDP, SSL meta-architecture, DINO
# wrapper with heads); when present, only the keys under them are kept.
SUBMODULE_PREFIXES = ("module.", "teacher.", "backbone.")
# Parts of the training setup that are not the backbone.
DROPPED_PREFIXES = ("head.", "dino_head.", "ibot_head.")
DROPPED_KEYS = frozenset({"mask_token"})
# Hugging Face Dinov2Model names -> DINOv2 release names (qkv is joined separately).
HF_RENAMES = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.mask_token$", "mask_token"),
    (r"^embeddings\.register_tokens$", "register_tokens"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.(norm1|norm2|mlp\.fc1|mlp\.fc2)\.", r"blocks.\1.\2."),
    (r"^layernorm\.", "norm."),
)
HF_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
CHUNKED_BLOCK = re.compile(r"^blocks\.\d+\.(\d+)\.")


def load_state_dict_file(path: str | Path) -> dict[str, Tensor]:
    """Read a checkpoint file and return the (unwrapped) state dict it holds."""
    path = Path(path)
    if not path.is_file():
        raise UssegError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            obj: Any = load_file(path)
        else:
            # DINO's full checkpoints carry their argparse.Namespace; it holds plain values.
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a malformed file can fail anywhere inside the unpickler
        raise UssegError(f"{path}: not a readable safetensors or torch checkpoint ({exc})") from exc
    return _as_state_dict(unwrap(obj), str(path))


def unwrap(obj: Any) -> Any:
    """Descend through training-checkpoint wrappers (teacher/model/state_dict/student)."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            return obj
        obj = inner
    return obj


def _as_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping) or not obj:
        raise UssegError(f"{source}: not a state dict (found {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise UssegError(f"{source}: not a state dict (non-tensor entries such as {bad[:3]})")
    return dict(obj)


def to_timm_state_dict(
    sd: Mapping[str, Any], spec: BackboneSpec, source: str = "state dict"
) -> dict[str, Tensor]:
    """Rename a DINO / DINOv2 / Hugging Face / timm state dict to ``spec``'s timm keys.

    Raises UssegError naming ``source`` when keys are left over, missing or of the wrong shape.
    """
    sd = _as_state_dict(unwrap(sd), source)
    sd = _select_backbone(sd)
    if "embeddings.cls_token" in sd:
        sd = _from_hf(sd)
    sd = {k: v for k, v in sd.items() if k not in DROPPED_KEYS and not k.startswith(DROPPED_PREFIXES)}
    sd = {CHUNKED_BLOCK.sub(r"blocks.\1.", k): v for k, v in sd.items()}
    if "register_tokens" in sd:
        sd = _fold_registers(sd)
    check_state_dict(sd, spec, source)
    return {k: v.detach().to(torch.float32).contiguous() for k, v in sd.items()}


def _select_backbone(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    for prefix in SUBMODULE_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k.removeprefix(prefix): v for k, v in sd.items() if k.startswith(prefix)}
    return sd


def _from_hf(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face Dinov2Model names to the DINOv2 release's, joining q/k/v into one qkv."""
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, Tensor]] = {}
    for key, value in sd.items():
        match = HF_QKV.match(key)
        if match:
            block, part, kind = match.groups()
            qkv.setdefault((block, kind), {})[part] = value
            continue
        for pattern, repl in HF_RENAMES:
            key = re.sub(pattern, repl, key)
        out[key] = value
    for (block, kind), parts in qkv.items():
        if len(parts) != 3:
            raise UssegError(f"encoder.layer.{block}: q/k/v {kind} incomplete (found {sorted(parts)})")
        out[f"blocks.{block}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in ("query", "key", "value")])
    return out


def _fold_registers(sd: dict[str, Tensor]) -> dict[str, Tensor]:
    """DINOv2 adds pos_embed[0] to CLS and none to registers; timm keeps it in cls_token."""
    sd = dict(sd)
    pos = sd.pop("pos_embed")
    sd["reg_token"] = sd.pop("register_tokens")
    sd["cls_token"] = sd["cls_token"] + pos[:, :1]
    sd["pos_embed"] = pos[:, 1:]
    return sd


@functools.cache
def expected_shapes(spec: BackboneSpec) -> dict[str, torch.Size]:
    """timm's own key set for ``spec``, from a model on the meta device (no memory, no init)."""
    return {k: v.shape for k, v in create_timm_model(spec, device="meta").state_dict().items()}


def check_state_dict(sd: Mapping[str, Tensor], spec: BackboneSpec, source: str) -> None:
    expected = expected_shapes(spec)
    problems = []
    unknown = sorted(set(sd) - set(expected))
    missing = sorted(set(expected) - set(sd))
    wrong = [
        f"{k} {tuple(sd[k].shape)} != {tuple(expected[k])}"
        for k in sd
        if k in expected and sd[k].shape != expected[k]
    ]
    if unknown:
        problems.append(f"{len(unknown)} unknown keys, e.g. {unknown[:5]}")
    if missing:
        problems.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
    if wrong:
        problems.append(f"{len(wrong)} wrong shapes, e.g. {wrong[:3]}")
    if problems:
        raise UssegError(f"{source}: does not fit {spec.name} ({spec.timm_name}): " + "; ".join(problems))


def save_state_dict(sd: Mapping[str, Tensor], path: str | Path) -> None:
    """Write safetensors atomically: a reader never sees a half-written weights file."""
    with atomic_file(path, "wb") as fh:
        fh.write(save(dict(sd)))
