"""Refine stage: upsampling, probabilities from predictions, and `usseg refine` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

from conftest import run_workflow, tiny_params
from usseg.artifacts.predictions import write_predictions
from usseg.artifacts.prepared import PreparedWriter, Sample
from usseg.artifacts.upsample import upsample_labels, upsample_scores
from usseg.cli import main
from usseg.errors import UssegError
from usseg.refine.image import from_labels, from_scores

REPO = Path(__file__).resolve().parents[1]
GROUP = yaml.safe_load((REPO / "params.yaml").read_text())["refine"]


# ---------------------------------------------------------------- upsampling


@pytest.mark.parametrize("grid, size", [((16, 16), (375, 500)), ((4, 6), (61, 47)), ((1, 1), (9, 14)), ((3, 5), (3, 5))])
def test_bilinear_is_torch_align_corners_false(grid: tuple[int, int], size: tuple[int, int]) -> None:
    scores = np.random.default_rng(0).random((3, *grid)).astype(np.float32)
    ours = upsample_scores(scores, *size)
    ref = F.interpolate(torch.from_numpy(scores)[None], size=size, mode="bilinear", align_corners=False)[0]
    assert ours.shape == (3, *size)
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-5)


def test_bilinear_of_a_constant_is_constant() -> None:
    up = upsample_scores(np.full((2, 5, 7), 0.25, np.float32), 33, 101)
    np.testing.assert_allclose(up, 0.25, atol=1e-6)


def test_nearest_keeps_ids_and_inverts_the_warp() -> None:
    """Non-square, not a multiple of the patch grid: each pixel takes the patch holding its centre."""
    labels = np.array([[0, 1, 255], [2, 3, 4]], np.uint8)
    up = upsample_labels(labels, 7, 10)  # 2x3 grid onto 7x10: rows 3.5, cols 3.33 pixels per patch
    assert up.shape == (7, 10) and up.dtype == np.uint8
    assert set(np.unique(up)) == {0, 1, 2, 3, 4, 255}
    assert (up[:3, :3] == 0).all() and (up[4:, 7:] == 4).all() and (up[:3, 7:] == 255).all()
    rows = (np.arange(7) + 0.5) * 2 / 7
    assert (up[:, 0] == labels[rows.astype(int), 0]).all()
    ref = F.interpolate(torch.from_numpy(labels)[None, None].float(), size=(7, 10), mode="nearest-exact")
    assert (up == ref[0, 0].numpy()).all()


def test_hard_labels_become_probabilities() -> None:
    labels = np.array([[0, 255], [1, 2]], np.uint8)
    up = from_labels(labels, 4, 6, 3, confidence=0.7, need_probs=True, where="x")
    assert up.probs is not None and up.probs.shape == (3, 4, 6)
    np.testing.assert_allclose(up.probs.sum(0), 1.0, atol=1e-6)
    assert up.probs[0, 0, 0] == pytest.approx(0.7) and up.probs[1, 0, 0] == pytest.approx(0.15)
    np.testing.assert_allclose(up.probs[:, 0, 5], 1 / 3)  # unlabelled: uniform
    assert up.labels[0, 5] == 255
    assert from_labels(labels, 4, 6, 3, 1.0, need_probs=True, where="x").probs[2, 3, 5] == 1.0
    assert from_labels(labels, 4, 6, 3, 0.7, need_probs=False, where="x").probs is None


def test_soft_scores_normalised_and_all_zero_patch_unlabelled() -> None:
    scores = np.zeros((2, 2, 2), np.float32)
    scores[0, 0, 0] = 3.0
    scores[1, 0, 1] = scores[0, 0, 1] = 2.0
    scores[1, 1, :] = 0.5
    up = from_scores(scores, 8, 8, 2, "x")
    assert up.probs is not None
    np.testing.assert_allclose(up.probs.sum(0), 1.0, atol=1e-5)
    assert up.labels[0, 0] == 0 and up.labels[7, 7] == 1
    # Patch (1, 1) has scores 0.5 for label 1 only; patch (1, 0) also 0.5 -> label 1.
    scores[:, 1, 1] = 0.0
    assert from_scores(scores, 8, 8, 2, "x").labels[7, 7] == 255


@pytest.mark.parametrize(
    "scores, message",
    [
        (np.full((2, 3, 3), np.nan, np.float32), "NaN"),
        (-np.ones((2, 3, 3), np.float32), "negative"),
        (np.ones((3, 3, 3), np.float32), "expected \\(2, gh, gw\\)"),
    ],
)
def test_bad_scores_name_the_image(scores: np.ndarray, message: str) -> None:
    with pytest.raises(UssegError, match=f"image 'a'.*{message}"):
        from_scores(scores, 10, 10, 2, "image 'a'")


def test_labels_out_of_range_are_an_error() -> None:
    with pytest.raises(UssegError, match="outside 0..2"):
        from_labels(np.array([[0, 7]], np.uint8), 4, 4, 3, 0.7, True, "image 'a'")


# ---------------------------------------------------------------- end to end

SIZES = [(40, 56), (47, 33), (30, 30)]  # non-square, not multiples of the 4x4 grid


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One tracking database for the module: creating its schema is the slow part."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mlflow_db: str) -> dict[str, Any]:
    """A prepared 3-image dataset (two colour regions each) and hard patch labels for it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_db)
    rng = np.random.default_rng(0)
    samples, truths = [], []
    for i, (h, w) in enumerate(SIZES):
        truth = np.zeros((h, w), np.uint8)
        truth[:, w // 2 :] = 1
        image = np.where(truth[..., None] == 1, [30, 160, 60], [210, 50, 40]) + rng.normal(0, 6, (h, w, 3))
        samples.append(Sample(f"img{i}", np.clip(image, 0, 255).astype(np.uint8), truth))
        truths.append(truth)
    root = tmp_path / "prepared"
    PreparedWriter(root, "tiny", ["left", "right"], has_background=False).write([("val", samples)])
    labels = np.zeros((3, 4, 4), np.uint8)
    labels[:, :, 2:] = 1
    labels[0, 0, 0] = 255  # one unlabelled patch
    labels[1, 3, 1] = 1  # one wrong patch for the CRF to fix
    ids, hs, ws = [s.id for s in samples], [h for h, _ in SIZES], [w for _, w in SIZES]
    write_predictions(tmp_path / "hard.zarr", ids, hs, ws, labels=labels, num_labels=2)
    scores = np.stack([labels == 0, labels == 1], 1).astype(np.float32) * 0.8 + 0.1
    scores[0, :, 0, 0] = 0.5
    write_predictions(tmp_path / "soft.zarr", ids, hs, ws, scores=scores, num_labels=2)
    return {"root": root, "tmp": tmp_path, "ids": ids, "truths": truths}


def refine(ds: dict[str, Any], scores: str, out: str, *extra: str, **params: Any) -> int:
    group = {**GROUP, **params}
    return main([
        "refine", "--scores", str(ds["tmp"] / scores), "--dataset-dir", str(ds["root"]), "--split", "val",
        "--out", str(ds["tmp"] / out), "--params", json.dumps(group), *extra,
        "--experiment", json.dumps({"name": "t", "method": "kmeans", "dataset": "tiny", "backbone": "b",
                                    "params_hash": "0"}),
    ])


def read_maps(folder: Path, ids: list[str]) -> list[np.ndarray]:
    return [np.asarray(Image.open(folder / f"{i}.png")) for i in ids]


def test_cli_crf_off_upsamples_to_original_size(dataset: dict[str, Any]) -> None:
    assert refine(dataset, "hard.zarr", "off") == 0
    out = dataset["tmp"] / "off"
    index = json.loads((out / "index.json").read_text())
    assert index["num_labels"] == 2 and index["split"] == "val" and index["crf"] == "none"
    assert index["impl"] == "pydensecrf"
    maps = read_maps(out, dataset["ids"])
    assert [m.shape for m in maps] == SIZES
    assert maps[0][0, 0] == 255 and (maps[0] != 255).mean() > 0.9  # unlabelled patch stays 255
    assert not (dataset["tmp"] / "off.partial").exists()


@pytest.mark.parametrize("impl", ["pydensecrf", "torch"])
def test_cli_crf_fixes_a_wrong_patch(dataset: dict[str, Any], impl: str) -> None:
    assert refine(dataset, "hard.zarr", impl, crf="stego", impl=impl, save_probs=True) == 0
    out = dataset["tmp"] / impl
    maps = read_maps(out, dataset["ids"])
    truth = dataset["truths"][1]
    wrong = np.zeros((4, 4), np.uint8)
    wrong[:, 2:] = 1
    wrong[3, 1] = 1
    assert (upsample_labels(wrong, *SIZES[1]) == truth).mean() < 0.95  # without the CRF
    assert (maps[1] == truth).mean() > 0.97  # the wrong patch is repaired
    assert maps[0][0, 0] == 255  # fill_unlabelled false: unlabelled stays unlabelled
    probs = np.load(out / "probs" / "img1.npy")
    assert probs.shape == (2, *SIZES[1]) and probs.dtype == np.float16
    assert json.loads((out / "index.json").read_text())["crf_params"]["iterations"] == 10


def test_cli_implementations_agree_and_fill_unlabelled(dataset: dict[str, Any]) -> None:
    for impl in ("pydensecrf", "torch"):
        assert refine(dataset, "soft.zarr", impl, crf="dsm", impl=impl, fill_unlabelled=True) == 0
    a = np.concatenate([m.ravel() for m in read_maps(dataset["tmp"] / "pydensecrf", dataset["ids"])])
    b = np.concatenate([m.ravel() for m in read_maps(dataset["tmp"] / "torch", dataset["ids"])])
    assert (a == b).mean() >= 0.98
    assert (a != 255).all()  # filled


def test_cli_worker_pool_and_shards(dataset: dict[str, Any]) -> None:
    assert refine(dataset, "hard.zarr", "pool", "--threads", "2", crf="stego") == 0
    assert refine(dataset, "hard.zarr", "sharded", "--shard", "1/2", crf="stego") == 0
    partial = dataset["tmp"] / "sharded.partial"
    assert partial.is_dir() and not (dataset["tmp"] / "sharded").exists()  # not complete yet
    assert (partial / "img1.png").is_file() and not (partial / "img0.png").exists()
    assert refine(dataset, "hard.zarr", "sharded", "--shard", "0/2", crf="stego") == 0
    assert not partial.exists()
    index = json.loads((dataset["tmp"] / "sharded" / "index.json").read_text())
    assert index["images"] == 3 and not (dataset["tmp"] / "sharded" / ".shards").exists()
    for a, b in zip(read_maps(dataset["tmp"] / "pool", dataset["ids"]),
                    read_maps(dataset["tmp"] / "sharded", dataset["ids"]), strict=True):
        assert (a == b).all()


def test_cli_shards_with_other_settings_are_refused(dataset: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    assert refine(dataset, "hard.zarr", "mixed", "--shard", "0/2", crf="stego") == 0
    assert refine(dataset, "hard.zarr", "mixed", "--shard", "1/2", crf="dsm") == 2
    assert "other inputs, settings or shard count" in capsys.readouterr().err


def test_cli_mismatching_ids_name_the_image(dataset: dict[str, Any], capsys: pytest.CaptureFixture) -> None:
    labels = np.zeros((3, 4, 4), np.uint8)
    ids = ["img0", "imgX", "img2"]
    write_predictions(dataset["tmp"] / "bad.zarr", ids, [h for h, _ in SIZES], [w for _, w in SIZES],
                      labels=labels, num_labels=2)
    assert refine(dataset, "bad.zarr", "bad") == 2
    err = capsys.readouterr().err
    assert "'imgX'" in err and "'img1'" in err
    assert not (dataset["tmp"] / "bad").exists()
    write_predictions(dataset["tmp"] / "sz.zarr", dataset["ids"], [40, 47, 31], [56, 33, 30],
                      labels=np.zeros((3, 4, 4), np.uint8), num_labels=2)
    assert refine(dataset, "sz.zarr", "sz") == 2
    assert "'img2'" in capsys.readouterr().err


@pytest.mark.e2e
def test_workflow_runs_the_baseline_with_crf_off_and_on(workdir, random_vits14) -> None:
    """Snakemake: the kmeans branch as two experiments, CRF off and stego, both evaluated."""
    exps = [
        {"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"},
        {"name": "km-crf", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14",
         "overrides": {"refine": {"crf": "stego"}}},
    ]
    wf = workdir(tiny_params(random_vits14, exps))
    run_workflow(wf)
    metrics = {n: json.loads((wf / f"results/kmeans/{n}/eval/metrics.json").read_text()) for n in ("km", "km-crf")}
    assert metrics["km"]["crf"] == "none" and metrics["km-crf"]["crf"] == "stego"
    index = json.loads((wf / "results/kmeans/km-crf/refined/index.json").read_text())
    assert index["crf_params"]["iterations"] == 10 and index["images"] == 6
    off = sorted((wf / "results/kmeans/km/refined").glob("*.png"))
    on = sorted((wf / "results/kmeans/km-crf/refined").glob("*.png"))
    assert [p.name for p in off] == [p.name for p in on] and len(on) == 6
    changed = [(np.asarray(Image.open(a)) != np.asarray(Image.open(b))).mean() for a, b in zip(off, on, strict=True)]
    assert max(changed) > 0  # the CRF did something
