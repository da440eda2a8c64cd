"""Backbones: registry vs timm, checkpoint formats round-trip, extractor outputs, weights job."""

import argparse
import os
import pickle
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import timm
import torch
import yaml
from timm.models.vision_transformer import VisionTransformer

from usseg.artifacts.digest import file_digest
from usseg.backbones import extractor as extractor_module
from usseg.backbones.checkpoints import (
    expected_shapes,
    load_state_dict_file,
    save_state_dict,
    to_timm_state_dict,
)
from usseg.backbones.cli import write_weights
from usseg.backbones.extractor import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ViTExtractor,
    build_backbone,
    normalize,
    pretrained_model,
)
from usseg.backbones.params import WeightsParams
from usseg.backbones.registry import BACKBONES, IMGFOCUS, BackboneSpec, create_timm_model, get_spec
from usseg.errors import UssegError

SCHEMA = Path(__file__).parents[1] / "workflow/schemas/groups/backbones.schema.yaml"


# --- registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_spec_matches_timm(name):
    spec = BACKBONES[name]
    assert spec.timm_name in timm.list_models()
    if spec.timm_pretrained_tag is not None:
        assert spec.pretrained_name in timm.list_pretrained()
    model = create_timm_model(spec, device="meta")
    assert model.patch_embed.patch_size == (spec.patch_size, spec.patch_size)
    assert model.embed_dim == spec.embed_dim
    assert model.blocks[-1].attn.num_heads == spec.num_heads
    assert model.num_prefix_tokens == spec.num_prefix_tokens
    assert model.patch_embed.grid_size == (spec.img_size // spec.patch_size,) * 2


def test_unknown_backbone_lists_known():
    with pytest.raises(UssegError, match="dino_vits16"):
        get_spec("resnet50")


# --- checkpoint formats -----------------------------------------------------------------


def _random_sd(spec, seed=0):
    """Random tensors with timm's own key set and shapes (no model is built)."""
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(tuple(s), generator=gen) for k, s in expected_shapes(spec).items()}


def _assert_same(a, b):
    assert sorted(a) == sorted(b)
    for k in a:  # exact, except CLS of register models (pos_embed[0] subtracted then added)
        assert a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]) or (a[k] - b[k]).abs().max() <= 1e-6, k


def _dino_full_checkpoint(timm_sd, other_sd):
    """DINO's ``*_full_checkpoint.pth``: DDP student, plain teacher, both with the DINO head."""
    head = {"head.mlp.0.weight": torch.randn(8, 384), "head.last_layer.weight_g": torch.randn(8, 1)}
    return {
        "student": {f"module.backbone.{k}": v for k, v in other_sd.items()}
        | {f"module.{k}": v for k, v in head.items()},
        "teacher": {f"backbone.{k}": v for k, v in timm_sd.items()} | head,
        "epoch": 100,
        "args": argparse.Namespace(arch="vit_small", patch_size=16),
    }


def _dinov2_release(timm_sd, spec):
    """DINOv2 hub release: mask_token, registers as ``register_tokens``, CLS in pos_embed."""
    sd = dict(timm_sd)
    sd["mask_token"] = torch.randn(1, spec.embed_dim)
    if spec.num_registers:
        cls_pos = torch.randn(1, 1, spec.embed_dim)
        sd["register_tokens"] = sd.pop("reg_token")
        sd["cls_token"] = sd["cls_token"] - cls_pos
        sd["pos_embed"] = torch.cat([cls_pos, sd["pos_embed"]], dim=1)
    return sd


def _chunked(sd, chunks=4):
    """DINOv2 training checkpoints with block_chunks: ``blocks.<chunk>.<global index>.``."""
    out = {}
    for k, v in sd.items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // (12 // chunks)}.{k.split('.', 1)[1]}"
        out[k] = v
    return out


def _hf_dinov2(sd, spec):
    """Hugging Face Dinov2Model names, q/k/v split."""
    sd = _dinov2_release(sd, spec)
    out = {
        "embeddings.cls_token": sd.pop("cls_token"),
        "embeddings.mask_token": sd.pop("mask_token"),
        "embeddings.position_embeddings": sd.pop("pos_embed"),
        "embeddings.patch_embeddings.projection.weight": sd.pop("patch_embed.proj.weight"),
        "embeddings.patch_embeddings.projection.bias": sd.pop("patch_embed.proj.bias"),
        "layernorm.weight": sd.pop("norm.weight"),
        "layernorm.bias": sd.pop("norm.bias"),
    }
    if "register_tokens" in sd:
        out["embeddings.register_tokens"] = sd.pop("register_tokens")
    renames = {"attn.proj": "attention.output.dense", "ls1.gamma": "layer_scale1.lambda1"}
    renames["ls2.gamma"] = "layer_scale2.lambda1"
    for k, v in sd.items():
        _, i, rest = k.split(".", 2)
        if rest.startswith("attn.qkv."):
            for part, chunk in zip(("query", "key", "value"), v.chunk(3)):
                out[f"encoder.layer.{i}.attention.attention.{part}.{rest.rsplit('.', 1)[1]}"] = chunk
            continue
        for old, new in renames.items():
            rest = rest.replace(old, new)
        out[f"encoder.layer.{i}.{rest}"] = v
    return out


def test_dino_plain_release_is_timm_layout():
    spec = get_spec("dino_vits16")
    sd = _random_sd(spec)
    _assert_same(to_timm_state_dict(sd, spec), sd)


def test_dino_full_checkpoint_file_uses_teacher(tmp_path):
    spec = get_spec("dino_vits16")
    teacher, student = _random_sd(spec, 0), _random_sd(spec, 1)
    path = tmp_path / "dino_deitsmall16_full_checkpoint.pth"
    torch.save(_dino_full_checkpoint(teacher, student), path)
    _assert_same(to_timm_state_dict(load_state_dict_file(path), spec), teacher)


def test_student_only_ddp_checkpoint():
    spec = get_spec("dino_vits8")
    sd = _random_sd(spec)
    wrapped = {"student": {f"module.backbone.{k}": v for k, v in sd.items()}}
    _assert_same(to_timm_state_dict(wrapped, spec), sd)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_dinov2_release(name):
    spec = get_spec(name)
    sd = _random_sd(spec)
    _assert_same(to_timm_state_dict(_dinov2_release(sd, spec), spec), sd)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_dinov2_training_checkpoint_chunked_blocks(name, tmp_path):
    spec = get_spec(name)
    sd = _random_sd(spec)
    release = _chunked(_dinov2_release(sd, spec))
    assert "blocks.1.3.norm1.weight" in release
    teacher = {f"backbone.{k}": v for k, v in release.items()}
    teacher |= {"dino_head.mlp.0.weight": torch.randn(4, 4), "ibot_head.mlp.0.weight": torch.randn(4, 4)}
    path = tmp_path / "teacher_checkpoint.pth"
    torch.save({"teacher": teacher}, path)
    _assert_same(to_timm_state_dict(load_state_dict_file(path), spec), sd)


def test_ssl_meta_arch_model_wrapper_picks_teacher():
    spec = get_spec("dinov2_vits14")
    sd, other = _random_sd(spec, 0), _random_sd(spec, 1)
    model = {f"teacher.backbone.{k}": v for k, v in _dinov2_release(sd, spec).items()}
    model |= {f"student.backbone.{k}": v for k, v in other.items()}
    _assert_same(to_timm_state_dict({"model": model, "iteration": 5}, spec), sd)


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vits14_reg"])
def test_hugging_face_dinov2(name):
    spec = get_spec(name)
    sd = _random_sd(spec)
    _assert_same(to_timm_state_dict({"state_dict": _hf_dinov2(sd, spec)}, spec), sd)


def test_safetensors_round_trip(tmp_path):
    spec = get_spec("dinov2_vits14_reg")
    sd = _random_sd(spec)
    save_state_dict(sd, tmp_path / "w.safetensors")
    _assert_same(load_state_dict_file(tmp_path / "w.safetensors"), sd)
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]


def test_unknown_and_missing_keys_are_listed():
    spec = get_spec("dino_vits16")
    sd = _random_sd(spec)
    sd["blocks.0.attn.rel_pos"] = torch.zeros(3)
    with pytest.raises(UssegError, match=r"1 unknown keys.*blocks\.0\.attn\.rel_pos"):
        to_timm_state_dict(sd, spec, source="ckpt.pth")
    del sd["blocks.0.attn.rel_pos"], sd["norm.weight"]
    with pytest.raises(UssegError, match=r"ckpt\.pth.*missing keys.*norm\.weight"):
        to_timm_state_dict(sd, spec, source="ckpt.pth")


def test_wrong_architecture_is_named():
    sd = _random_sd(get_spec("dino_vits16"))
    with pytest.raises(UssegError, match=r"dino_vitb16.*wrong shapes"):
        to_timm_state_dict(sd, get_spec("dino_vitb16"))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.mark.parametrize(
    "filename, content",
    [
        ("notes.pth", b"this is not a checkpoint"),
        ("broken.safetensors", b"\x00\x01garbage"),
        ("evil.pth", pickle.dumps({"x": _Evil()}, protocol=2)),
    ],
)
def test_bad_files_are_named(tmp_path, filename, content):
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(UssegError, match=filename):
        load_state_dict_file(path)


def test_non_state_dict_file_is_named(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(UssegError, match="list.pt.*not a state dict"):
        load_state_dict_file(path)
    torch.save({"weights": torch.zeros(2), "epoch": 3}, path)
    with pytest.raises(UssegError, match="list.pt.*non-tensor"):
        load_state_dict_file(path)
    with pytest.raises(UssegError, match="missing.pth"):
        load_state_dict_file(tmp_path / "missing.pth")


# --- extractor --------------------------------------------------------------------------


def _tiny(patch=16, img=64, registers=0, seed=0):
    """A small random ViT wrapped like a registered backbone."""
    torch.manual_seed(seed)
    model = VisionTransformer(
        img_size=img,
        patch_size=patch,
        embed_dim=48,
        depth=2,
        num_heads=3,
        num_classes=0,
        dynamic_img_size=True,
        reg_tokens=registers,
        no_embed_class=registers > 0,
        init_values=1e-1,
    )
    with torch.no_grad():  # make the position embedding matter
        model.pos_embed.normal_()
        model.cls_token.normal_()
    family = "dinov2" if patch == 14 else "dino"
    spec = BackboneSpec("tiny", "custom", patch, 48, 3, 1 + registers, None, family)
    return ViTExtractor(model, spec)


def _manual(ext, x):
    """DINO's get_last_selfattention and facets, computed directly from the timm modules."""
    m = ext.model
    h = m._pos_embed(m.patch_embed(x))  # input at the native grid: no resampling involved
    for blk in m.blocks[:-1]:
        h = blk(h)
    last = m.blocks[-1]
    b, n, d = h.shape
    qkv = last.attn.qkv(last.norm1(h)).reshape(b, n, 3, 3, d // 3).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)  # B x heads x N x hd
    attn = (q @ k.transpose(-2, -1) * (d // 3) ** -0.5).softmax(-1)
    return {
        "attn": attn[:, :, 0, ext.spec.num_prefix_tokens :],
        "keys": k.transpose(1, 2).reshape(b, n, d),
        "query": q.transpose(1, 2).reshape(b, n, d),
        "value": v.transpose(1, 2).reshape(b, n, d),
        "token": m.forward_features(x),
    }


@pytest.mark.parametrize("registers", [0, 2])
def test_extractor_matches_manual_computation(registers):
    ext = _tiny(registers=registers)
    x = torch.randn(2, 3, 64, 64)
    p = 1 + registers
    with torch.no_grad():
        manual = _manual(ext, x)
        for facet in ("keys", "query", "value", "token"):
            out = ext(x, facet=facet)
            assert out["patch"].shape == (2, 4, 4, 48)
            torch.testing.assert_close(out["patch"].reshape(2, 16, 48), manual[facet][:, p:])
    assert out["cls"].shape == (2, 48)
    torch.testing.assert_close(out["cls"], manual["token"][:, 0])
    assert out["attn"].shape == (2, 3, 4, 4)
    torch.testing.assert_close(out["attn"].reshape(2, 3, 16), manual["attn"])
    sums = out["attn"].sum(dim=(-2, -1))
    assert (sums <= 1 + 1e-5).all() and (sums > 0).all()
    if registers:
        assert (sums < 1 - 1e-4).all()  # CLS and registers take part of the softmax
    torch.testing.assert_close(ext.cls_token(x), out["cls"])


def test_non_square_input_and_grid():
    ext = _tiny(patch=14, img=56, registers=4)
    x = torch.randn(1, 3, 224, 280)
    with torch.no_grad():
        out = ext(x, facet="token")
    assert out["patch"].shape == (1, 16, 20, 48)
    assert out["attn"].shape == (1, 3, 16, 20)
    assert all(torch.isfinite(v).all() for v in out.values())
    # each patch token depends on its own position: transposing the image is not a no-op
    with torch.no_grad():
        flipped = ext(x.transpose(-2, -1), facet="token")["patch"].transpose(1, 2)
    assert not torch.allclose(flipped, out["patch"], atol=1e-3)


def test_position_embedding_is_resampled_without_antialias():
    ext = _tiny(patch=14, img=56)
    m = ext.model
    x = torch.randn(1, 3, 28, 42)
    with torch.no_grad():
        ours = ext._embed(m.patch_embed(x))
        grid = m.pos_embed[:, 1:].reshape(1, 4, 4, 48).permute(0, 3, 1, 2)
        resized = torch.nn.functional.interpolate(grid, size=(2, 3), mode="bicubic", align_corners=False)
        pos = torch.cat([m.pos_embed[:, :1], resized.flatten(2).transpose(1, 2)], dim=1)
        expected = torch.cat([m.cls_token, m.patch_embed(x).reshape(1, 6, 48)], dim=1) + pos
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("size", [(64, 60), (0, 64)])
def test_bad_sizes_and_facets(size):
    ext = _tiny()
    with pytest.raises(UssegError, match="multiple of patch 16"):
        ext(torch.zeros(1, 3, *size))
    with pytest.raises(UssegError, match="unknown facet"):
        ext(torch.zeros(1, 3, 64, 64), facet="keys_and_values")


def test_normalize():
    batch = np.zeros((2, 4, 5, 3), dtype=np.uint8)
    batch[..., 1] = 255
    x = normalize(batch)
    assert x.shape == (2, 3, 4, 5) and x.dtype == torch.float32
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(x[0, :, 0, 0], (torch.tensor([0.0, 1.0, 0.0]) - mean) / std)
    torch.testing.assert_close(normalize(torch.from_numpy(batch)), x)
    with pytest.raises(UssegError, match="uint8"):
        normalize(batch.astype(np.float32))


# --- building and the weights job -------------------------------------------------------


@pytest.fixture(scope="module")
def dino_checkpoint(tmp_path_factory):
    """A random ViT-S/16 saved as DINO's released full checkpoint."""
    spec = get_spec("dino_vits16")
    sd = _random_sd(spec, 7)
    path = tmp_path_factory.mktemp("ckpt") / "dino_vits16_full.pth"
    torch.save(_dino_full_checkpoint(sd, _random_sd(spec, 8)), path)
    return path, sd


def test_build_backbone_from_official_checkpoint(dino_checkpoint):
    path, sd = dino_checkpoint
    ext = build_backbone("dino_vits16", path)
    assert not ext.training and not any(p.requires_grad for p in ext.parameters())
    _assert_same(ext.model.state_dict(), sd)
    with torch.no_grad():
        out = ext(torch.randn(1, 3, 224, 224))
    assert out["patch"].shape == (1, 14, 14, 384) and out["attn"].shape == (1, 6, 14, 14)


def test_write_weights_from_local_checkpoint(dino_checkpoint, tmp_path):
    path, sd = dino_checkpoint
    out = tmp_path / "weights" / "dino_vits16.safetensors"
    result = write_weights("dino_vits16", out, WeightsParams(weights=str(path)))
    assert result.parameters == 21_665_664
    assert result.sha256 == file_digest(out)
    _assert_same(load_state_dict_file(out), sd)
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_write_weights_refuses_imgfocus_files_for_other_backbones(tmp_path):
    with pytest.raises(UssegError, match=IMGFOCUS):
        write_weights("dinov2_vits14", tmp_path / "w.safetensors", WeightsParams(weights="x/vit_s.onnx"))


def test_no_network_error_says_what_to_do(monkeypatch):
    def offline(spec, pretrained=False, device="cpu"):
        raise OSError("Name or service not known")

    monkeypatch.setattr(extractor_module, "create_timm_model", offline)
    with pytest.raises(UssegError) as info:
        pretrained_model(get_spec("dinov2_vitb14_reg"))
    message = str(info.value)
    for part in (
        "dinov2_vitb14_reg",
        "vit_base_patch14_reg4_dinov2.lvd142m",
        "backbones.dinov2_vitb14_reg.weights",
        IMGFOCUS,
        "Name or service not known",
    ):
        assert part in message
    with pytest.raises(UssegError, match="usseg weights --backbone"):
        build_backbone(IMGFOCUS, None)


def test_weights_subcommand_parses():
    from usseg.backbones.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "weights",
            "--backbone",
            IMGFOCUS,
            "--out",
            "w.safetensors",
            "--params",
            '{"weights": null, "cache_dir": "c"}',
        ]
    )
    assert args.params == {"weights": None, "cache_dir": "c"} and callable(args.func)


def test_schema_accepts_params_entries():
    schema = yaml.safe_load(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    good = {IMGFOCUS: {"weights": None}, "dino_vits16": {"weights": "ckpt/dino.pth", "cache_dir": "c"}}
    jsonschema.validate(good, schema)
    for bad in ({"dino_vits16": {"weight": None}}, {"dino_vits16": {"weights": 3}}, {"dino_vits16": None}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
