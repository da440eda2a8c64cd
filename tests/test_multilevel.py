"""Branch `multilevel` on constructed features whose true foreground is known."""

from __future__ import annotations

import dataclasses
import json
from collections import namedtuple
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from usseg.artifacts import features as store
from usseg.artifacts.features import open_features
from usseg.artifacts.predictions import open_predictions
from usseg.artifacts.prepared import PreparedWriter, Sample, read_label, write_label
from usseg.artifacts.upsample import upsample_labels
from usseg.errors import UssegError
from usseg.job_args import typed_params
from usseg.methods.multilevel import clustering as K
from usseg.methods.multilevel import consistency as C
from usseg.methods.multilevel import labelling as L
from usseg.methods.multilevel.fgiou import ForegroundIoU, truth
from usseg.methods.multilevel.levels import category_level, dataset_level, image_level
from usseg.methods.multilevel.params import LEVEL_PARAMS, ConsistencyParams, LabelParams
from usseg.methods.multilevel.stages import read_level, run_consistency, run_label, run_level

GRID = (8, 8)
PATCH = 4  # pixels per patch side in the constructed images
Rec = namedtuple("Rec", "id height width")

LEVEL_CFG: dict[str, Any] = {
    "seed": 0,
    "normalize": True,
    "niter": 20,
    "nredo": 1,
    "max_fit_patches": 200,
    "dataset": {"k": 2, "polarity": "border"},
    "category": {"categories": None, "polarity": "border"},
    "image": {"polarity": "border"},
}
CONSISTENCY_CFG: dict[str, Any] = {
    "levels": ["dataset", "category", "image"],
    "combine": "majority",
    "vote_threshold": 0.5,
    "align": True,
    "fallback": "image",
    "soft_weight": 0.4,
    "smooth_sigma": 0.0,
}


def level_cfg(level: str, **changes: Any) -> Any:
    """A level's typed parameters, parsed and checked as its CLI does."""
    return typed_params(LEVEL_PARAMS[level], {**LEVEL_CFG, **changes}, "multilevel")


def constructed(n: int = 8, dim: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """Images of two object types: a box of type-specific features inside a background.

    The boxes never touch the border (so the border rule can tell), the CLS token carries
    the type, the CLS attention is high on the box.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(dim, dim)))[0]
    bg_vec, obj_vec = basis[0] * 3, basis[1] * 3
    type_vecs = [obj_vec + basis[2], obj_vec + basis[3]]
    types = np.arange(n) % 2
    truth_fg = np.zeros((n, *GRID), dtype=bool)
    patch = np.empty((n, *GRID, dim), dtype=np.float32)
    for i in range(n):
        y, x = rng.integers(1, 3, size=2)
        truth_fg[i, y : y + 4, x : x + 4] = True
        patch[i] = np.where(truth_fg[i][..., None], type_vecs[types[i]], bg_vec)
    patch += 0.15 * rng.normal(size=patch.shape)
    cls = np.stack([type_vecs[t] for t in types]) + 0.05 * rng.normal(size=(n, dim))
    attn = np.where(truth_fg[:, None], 0.05, 0.005) + 0.001 * rng.random((n, 2, *GRID))
    return {"patch": patch, "cls": cls, "attn": attn, "truth": truth_fg, "types": types}


def write_store(path: Path, data: dict[str, np.ndarray]) -> Path:
    n, dim = len(data["patch"]), data["patch"].shape[-1]
    records = [Rec(f"img{i}", GRID[0] * PATCH, GRID[1] * PATCH) for i in range(n)]
    attrs = {"grid": list(GRID), "image_size": [GRID[0] * 14, GRID[1] * 14], "patch_size": 14}
    store.create_store(path, records, GRID, dim, data["attn"].shape[1], attrs)
    store.write_batch(path, 0, data["patch"], data["cls"], data["attn"])
    return path


@pytest.fixture
def data() -> dict[str, np.ndarray]:
    return constructed()


@pytest.fixture
def features(tmp_path: Path, data: dict[str, np.ndarray]):
    return open_features(write_store(tmp_path / "f.zarr", data))


# --- polarity ------------------------------------------------------------------------


def test_polarity_picks_cluster_with_more_evidence_whatever_its_index() -> None:
    # cluster 0 is the object (high evidence), cluster 1 the background
    assert K.polarity([9.0, 1.0], [10, 10]).tolist() == [True, False]
    assert K.polarity([1.0, 9.0], [10, 10]).tolist() == [False, True]
    # three clusters: only those above the overall mean are foreground
    assert K.polarity([9.0, 1.0, 2.0], [10, 10, 10]).tolist() == [True, False, False]


def test_border_evidence_is_zero_on_the_border_only() -> None:
    ev = K.evidence("border", 2, (4, 5))
    assert ev.shape == (2, 4, 5)
    assert ev[0, 0].sum() == 0 and ev[0, :, 0].sum() == 0 and ev[0, 1:3, 1:4].min() == 1


@pytest.mark.parametrize("rule", ["border", "attention"])
def test_dataset_level_finds_the_true_foreground(features, data, rule: str) -> None:
    result = dataset_level(features, level_cfg("dataset", dataset={"k": 2, "polarity": rule}))
    assert (result.mask.astype(bool) == data["truth"]).mean() > 0.98
    assert result.info["foreground_clusters"] and len(result.info["cluster_sizes"]) == 2


def test_dataset_level_fits_on_a_subsample_only(features, data, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    original = K.fit_kmeans

    def spy(x: np.ndarray, *args: Any, **kw: Any) -> np.ndarray:
        seen.append(len(x))
        return original(x, *args, **kw)

    monkeypatch.setattr("usseg.methods.multilevel.levels.fit_kmeans", spy)
    # below the schema's minimum of 100, so past the parser: the arithmetic, not the rule, is tested
    result = dataset_level(features, dataclasses.replace(level_cfg("dataset"), max_fit_patches=80))
    assert seen == [80]  # 10 per image for 8 images
    assert result.mask.shape == data["truth"].shape  # yet every patch is assigned


def test_category_level_groups_types_and_finds_foreground(features, data) -> None:
    result = category_level(features, level_cfg("category"), num_foreground=2)
    # pseudo-categories recover the two types (up to renaming)
    pairs = set(zip(result.units.tolist(), data["types"].tolist()))
    assert len(pairs) == 2 and len({u for u, _ in pairs}) == 2
    assert (result.mask.astype(bool) == data["truth"]).mean() > 0.98


def test_image_level_is_decided_per_image(features, data) -> None:
    result = image_level(features, level_cfg("image"))
    assert result.units.tolist() == list(range(len(data["truth"])))
    assert (result.mask.astype(bool) == data["truth"]).mean() > 0.98


def test_levels_are_deterministic(features) -> None:
    a, b = dataset_level(features, level_cfg("dataset")), dataset_level(features, level_cfg("dataset"))
    assert np.array_equal(a.mask, b.mask)


def test_unknown_polarity_rule_is_named() -> None:
    with pytest.raises(UssegError, match="polarity rule 'saliency'"):
        K.evidence("saliency", 1, (2, 2))


# --- consistency ---------------------------------------------------------------------


def test_align_flips_inverted_units_only() -> None:
    ref = np.zeros((4, 4, 4), np.uint8)
    ref[:, 1:3, 1:3] = 1
    level = ref.copy()
    level[[1, 3]] = 1 - level[[1, 3]]  # images 1 and 3 came out inverted
    aligned = C.align(level, np.arange(4), ref)
    assert np.array_equal(aligned, ref)
    # per unit: units {0,1} share a clustering; a unit is flipped as a whole
    units = np.array([0, 0, 1, 1])
    level2 = ref.copy()
    level2[[2, 3]] = 1 - level2[[2, 3]]
    assert np.array_equal(C.align(level2, units, ref), ref)


def test_align_keeps_polarity_when_reference_is_empty() -> None:
    level = np.zeros((1, 3, 3), np.uint8)
    level[0, 1, 1] = 1
    assert np.array_equal(C.align(level, np.zeros(1), np.zeros_like(level)), level)


def three_levels() -> dict[str, np.ndarray]:
    d = np.array([[[1, 1, 0, 0]]], np.uint8)
    c = np.array([[[1, 0, 1, 0]]], np.uint8)
    i = np.array([[[1, 1, 1, 0]]], np.uint8)
    return {"dataset": d, "category": c, "image": i}


def test_combine_majority_intersection_single() -> None:
    levels = three_levels()
    assert C.combine(levels, list(C.LEVELS), "majority").ravel().tolist() == [1, 1, 1, 0]
    assert C.combine(levels, list(C.LEVELS), "intersection").ravel().tolist() == [1, 0, 0, 0]
    assert C.combine(levels, ["category"], "majority").ravel().tolist() == [1, 0, 1, 0]
    # two levels: a strict majority needs both
    assert C.combine(levels, ["dataset", "category"], "majority").ravel().tolist() == [1, 0, 0, 0]
    with pytest.raises(UssegError, match="unknown level"):
        C.combine(levels, ["pixel"], "majority")
    with pytest.raises(UssegError, match="unknown mode"):
        C.combine(levels, ["image"], "union")


def test_combine_threshold_is_a_soft_vote() -> None:
    levels = three_levels()  # votes per patch: 1, 2/3, 2/3, 0
    assert C.combine(levels, list(C.LEVELS), "threshold", 1 / 3).ravel().tolist() == [1, 1, 1, 0]
    assert C.combine(levels, list(C.LEVELS), "threshold", 1.0).ravel().tolist() == [1, 0, 0, 0]
    # smoothed over a patch, the unanimous patch carries its 2/3 neighbour over 0.7 (0.73), not the next (0.49)
    assert C.combine(levels, list(C.LEVELS), "threshold", 0.7).ravel().tolist() == [1, 0, 0, 0]
    smooth = C.combine(levels, list(C.LEVELS), "threshold", 0.7, sigma=1.0)
    assert smooth.ravel().tolist() == [1, 1, 0, 0]


def test_empty_consistent_mask_falls_back_to_image_level() -> None:
    mask = np.array([[[0, 0]], [[1, 0]]], np.uint8)
    image = np.array([[[0, 1]], [[0, 1]]], np.uint8)
    out, fell = C.fall_back(mask, image)
    assert out.tolist() == [[[0, 1]], [[1, 0]]] and fell.tolist() == [True, False]


@pytest.mark.parametrize("mode", ["majority", "intersection"])
def test_soft_score_argmax_reproduces_the_consistent_mask(mode: str) -> None:
    levels = three_levels()
    mask = C.combine(levels, list(C.LEVELS), mode)
    scores = C.scores_array(C.soft_score(mask, C.votes(levels, list(C.LEVELS)), 0.4, 0.0))
    assert scores.shape == (1, 2, 1, 4)
    assert np.allclose(scores.sum(1), 1.0)
    assert np.array_equal(scores.argmax(1), mask)
    # unanimous patches are more confident than 2-of-3 ones
    if mode == "majority":
        assert scores[0, 1, 0, 0] > scores[0, 1, 0, 1] > 0.5 > scores[0, 1, 0, 3]


# --- labelling -----------------------------------------------------------------------


def test_regions_drop_small_components() -> None:
    fg = np.zeros((20, 20), bool)
    fg[2:8, 2:8] = True  # 36 px = 9 %
    fg[15, 15] = True  # 1 px
    fg[12:16, 2:6] = True  # 16 px = 4 %
    comp, n = L.regions(fg, 0.05, 8)
    assert n == 1 and comp[4, 4] == 1 and comp[15, 15] == 0 and comp[13, 3] == 0
    comp, n = L.regions(fg, 0.0, 8)
    assert n == 3


def test_label_step_clusters_constructed_cls_embeddings() -> None:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 32))
    truth_ids = np.repeat(np.arange(3), 10)
    emb = centres[truth_ids] + 0.05 * rng.normal(size=(30, 32))
    clusters = L.cluster_regions(emb, 3, pca_dim=8, niter=20, nredo=2, seed=0)
    # a bijection between clusters and true groups
    assert len(set(zip(clusters.tolist(), truth_ids.tolist()))) == 3
    comp = np.array([[0, 1, 1], [0, 2, 0]])
    assert L.label_map(comp, np.array([4, 0])).tolist() == [[0, 5, 5], [0, 1, 0]]


def test_attention_embedding_weights_covered_patches() -> None:
    comp = np.zeros((4, 4), np.int32)
    comp[:2, :2] = 1  # exactly patch (0, 0) of a 2x2 grid
    patch = np.arange(2 * 2 * 3, dtype=np.float32).reshape(2, 2, 3)
    emb = L.attention_embeddings(comp, 1, patch, np.ones((1, 2, 2), np.float32))
    assert np.allclose(emb, patch[0, 0])


def test_region_crops_fill_outside_with_mean() -> None:
    image = np.full((10, 10, 3), 7, np.uint8)
    comp = np.zeros((10, 10), np.int32)
    comp[2:6, 2:4] = 1
    comp[2, 4] = 0
    crops = L.region_crops(image, comp, 1, (8, 8))
    assert crops.shape == (1, 8, 8, 3)
    assert (crops[0, 0, 0] == 7).all()


# --- measurement ---------------------------------------------------------------------


def test_foreground_iou_ignores_void_and_counts_any_class() -> None:
    gt = np.array([[0, 1, 2, 255]], np.uint8)
    fg, valid = truth(gt, 255)
    meter = ForegroundIoU()
    meter.add("a", np.array([[0, 1, 0, 1]]), fg, valid)
    assert meter.result()["a"] == pytest.approx(0.5)


# --- stages end to end on a tiny store -------------------------------------------------


def prepare(root: Path, data: dict[str, np.ndarray]) -> Path:
    """A prepared dataset matching the constructed store: coloured boxes, class = type + 1."""
    colours = np.array([[200, 30, 30], [30, 30, 200]], np.uint8)
    samples = []
    for i, (fg, t) in enumerate(zip(data["truth"], data["types"])):
        full = upsample_labels(fg, GRID[0] * PATCH, GRID[1] * PATCH)
        image = np.where(full[..., None], colours[t], np.uint8(90)).astype(np.uint8)
        samples.append(Sample(f"img{i}", image, (full * (t + 1)).astype(np.uint8)))
    PreparedWriter(root, "toy", ["background", "red", "blue"], has_background=True).write([("val", samples)])
    return root


def refined_from(mask_store: Path, out: Path) -> Path:
    """What the refine stage with CRF off gives for hard masks: nearest upsampling."""
    mask, _, ids = read_level(mask_store)
    out.mkdir()
    for m, image_id in zip(mask, ids):
        write_label(
            out / f"{image_id}.png", upsample_labels(m, GRID[0] * PATCH, GRID[1] * PATCH).astype(np.uint8)
        )
    (out / "index.json").write_text(json.dumps({"num_labels": 2, "split": "val", "crf": "none"}))
    return out


class ColourEmbedder:
    """Stands in for the ViT: a region's embedding is its mean colour."""

    def __init__(self) -> None:
        self.rows: list[np.ndarray] = []

    def add(self, image: np.ndarray, comp: np.ndarray, n: int) -> None:
        for r in range(1, n + 1):
            self.rows.append(image[comp == r].mean(0))

    def result(self) -> np.ndarray:
        return np.stack(self.rows)


@pytest.mark.parametrize("embedding", ["crop", "attention"])
def test_stages_from_levels_to_labels(tmp_path: Path, data, embedding: str) -> None:
    feats = write_store(tmp_path / "f.zarr", data)
    ds_dir = prepare(tmp_path / "prepared", data)
    levels = tmp_path / "levels"
    for name in C.LEVELS:
        stats = run_level(name, feats, ds_dir, levels / f"{name}.zarr", level_cfg(name))
        assert 0.1 < stats["foreground_fraction"] < 0.5
    paths = {name: levels / f"{name}.zarr" for name in C.LEVELS}
    stats = run_consistency(
        paths,
        tmp_path / "patch_scores.zarr",
        levels / "consistent.zarr",
        typed_params(ConsistencyParams, {"consistency": CONSISTENCY_CFG}, "multilevel").consistency,
    )
    assert stats["agreement.dataset"] > 0.98
    scores = open_predictions(tmp_path / "patch_scores.zarr")
    assert scores.attrs["kind"] == "soft" and scores["scores"].shape == (len(data["truth"]), 2, *GRID)
    refined = refined_from(levels / "consistent.zarr", tmp_path / "refined")

    label = {"embedding": embedding, "min_area": 0.01, "connectivity": 8, "k": None, "pca_dim": None,
             "batch_size": 4, "device": "cpu"}  # fmt: skip
    cfg = typed_params(LabelParams, {"seed": 0, "niter": 20, "nredo": 2, "label": label}, "multilevel")
    stats, fg_iou, panels = run_label(
        refined=refined,
        features_path=feats,
        dataset_dir=ds_dir,
        split="val",
        level_paths={n: levels / f"{n}.zarr" for n in ("dataset", "category", "image", "consistent")},
        out=tmp_path / "labels",
        fg_iou_path=tmp_path / "fg_iou.json",
        panels_dir=tmp_path / "panels",
        pictures=2,
        cfg=cfg,
        embedder=ColourEmbedder,
    )
    assert stats["regions"] == len(data["truth"]) and stats["clusters"] == 2
    assert set(fg_iou["iou"]) == {"dataset", "category", "image", "consistent", "refined"}
    assert min(fg_iou["iou"].values()) > 0.95
    assert json.loads((tmp_path / "fg_iou.json").read_text())["crf"] == "none"
    assert [p.name for p in panels] == ["img0.png", "img1.png"] and all(p.is_file() for p in panels)
    index = json.loads((tmp_path / "labels" / "index.json").read_text())
    assert index["num_labels"] == 3
    # labels agree with the ground truth up to a renaming of the two clusters
    pairs = set()
    for i in range(len(data["truth"])):
        pred = read_label(tmp_path / "labels" / f"img{i}.png")
        gt = read_label(ds_dir / "labels" / f"img{i}.png")
        pairs |= set(zip(pred.ravel().tolist(), gt.ravel().tolist()))
    assert pairs == {(0, 0), (1, 1), (2, 2)} or pairs == {(0, 0), (1, 2), (2, 1)}


def test_cli_runs_a_level_and_tracks_it(tmp_path: Path, data, monkeypatch: pytest.MonkeyPatch) -> None:
    from usseg.cli import main

    feats = write_store(tmp_path / "f.zarr", data)
    ds_dir = prepare(tmp_path / "prepared", data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = json.dumps({k: LEVEL_CFG[k] for k in ("seed", "normalize", "niter", "nredo", "image")})
    rc = main(
        [
            "multilevel-level",
            "--level",
            "image",
            "--features",
            str(feats),
            "--dataset-dir",
            str(ds_dir),
            "--out",
            "levels/image.zarr",
            "--params",
            params,
        ]
    )
    assert rc == 0
    mask, _, ids = read_level(tmp_path / "levels" / "image.zarr")
    assert (mask.astype(bool) == data["truth"]).mean() > 0.98 and ids[0] == "img0"
    assert (tmp_path / "results" / "mlflow.db").is_file()
    # a bad parameter is reported by name, not with a traceback
    bad = json.dumps({**json.loads(params), "image": {"polarity": "saliency"}})
    rc = main(
        [
            "multilevel-level",
            "--level",
            "image",
            "--features",
            str(feats),
            "--dataset-dir",
            str(ds_dir),
            "--out",
            "levels/bad.zarr",
            "--params",
            bad,
        ]
    )
    assert rc == 2 and not (tmp_path / "levels" / "bad.zarr").exists()


# --- end to end through Snakemake ------------------------------------------------------


@pytest.mark.e2e
def test_branch_end_to_end_on_the_demo(workdir, random_vits14) -> None:
    import mlflow

    from conftest import jobs_planned, run_workflow, tiny_params

    exp = [
        {
            "name": "ml",
            "method": "multilevel",
            "dataset": "demo",
            "backbone": "dinov2_vits14",
            "overrides": {"refine": {"crf": "stego"}, "multilevel": {"niter": 10, "nredo": 1}},
        }
    ]
    wf = workdir(tiny_params(random_vits14, exp))
    run_workflow(wf)
    out = wf / "results/multilevel/ml"
    metrics = json.loads((out / "eval/metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["crf"] == "stego" and metrics["num_images"] == 6
    assert metrics["num_labels"] == json.loads((out / "labels/index.json").read_text())["num_labels"]
    fg_iou = json.loads((out / "fg_iou.json").read_text())
    assert set(fg_iou["iou"]) == {"dataset", "category", "image", "consistent", "refined"}
    assert fg_iou["crf"] == "stego"
    assert open_predictions(out / "patch_scores.zarr")["scores"].shape == (6, 2, 8, 8)
    assert len(list((out / "panels").glob("*.png"))) == 1
    assert jobs_planned(wf) == []

    # the levels are shared steps: keyed by their parameters, tracked with the shared jobs
    levels = sorted(
        p.name.split("-")[0] for p in (wf / "results/multilevel/shared/demo/dinov2_vits14").iterdir()
    )
    assert levels == ["level_category", "level_dataset", "level_image"]
    mlflow.set_tracking_uri(f"sqlite:///{wf / 'results/mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    jobs = {r.data.tags.get("usseg.job"): r for r in runs}
    assert {
        "multilevel_dataset",
        "multilevel_category",
        "multilevel_image",
        "multilevel_consistency",
        "multilevel_label",
        "refine",
        "evaluate",
    } <= set(jobs)
    label_run = jobs["multilevel_label"]
    assert "fg_iou.refined" in label_run.data.metrics
    assert {d.dataset.name for d in label_run.inputs.dataset_inputs} >= {"refined", "features"}
    # the experiment's run lists the shared artifacts its jobs read, by their shared outputs' names
    parent = next(r for r in runs if r.data.tags.get("usseg.kind") == "experiment")
    assert {d.dataset.name for d in parent.inputs.dataset_inputs} == {
        "prepared/demo",
        "features",
        "weights/dinov2_vits14",
        "level_dataset",
        "level_category",
        "level_image",
    }


def test_each_step_parses_its_own_nested_groups_once() -> None:
    """A level gets its own group as a dataclass (not another level's); consistency's levels
    become a tuple; a nested key the schema forbids is named with its path."""
    category = level_cfg("category")
    assert category.category.categories is None and category.category.polarity == "border"
    assert not hasattr(category, "dataset") and not hasattr(category, "image")
    assert dataclasses.asdict(category) == {k: LEVEL_CFG[k] for k in
                                            ("seed", "normalize", "niter", "nredo", "max_fit_patches", "category")}  # fmt: skip
    consistency = typed_params(ConsistencyParams, {"consistency": CONSISTENCY_CFG}, "multilevel").consistency
    assert consistency.levels == ("dataset", "category", "image")
    with pytest.raises(UssegError, match=r"params multilevel\.dataset: 'k' is a required property"):
        typed_params(LEVEL_PARAMS["dataset"], {**LEVEL_CFG, "dataset": {"polarity": "border"}}, "multilevel")
    with pytest.raises(UssegError, match=r"missing \['image'\]"):
        typed_params(LEVEL_PARAMS["image"], {k: LEVEL_CFG[k] for k in ("seed", "normalize", "niter", "nredo")},
                     "multilevel")  # fmt: skip


def test_a_level_refuses_another_levels_parameters(tmp_path: Path) -> None:
    with pytest.raises(UssegError, match="the image level takes ImageLevelParams, not DatasetLevelParams"):
        run_level("image", tmp_path / "f.zarr", tmp_path, tmp_path / "o.zarr", level_cfg("dataset"))
