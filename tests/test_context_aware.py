"""context_aware branch: views, CAE, losses, clustering, checkpoints, training, resume, DAG."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
import yaml

from usseg.artifacts.predictions import open_predictions
from usseg.datasets import demo
from usseg.errors import UssegError
from usseg.job_args import typed_params
from usseg.methods.context_aware import train as train_mod
from usseg.methods.context_aware.cae import ContextAwareEmbedding, aggregate, bilateral_weights
from usseg.methods.context_aware.clustering import MiniBatchKMeans, cluster_stats
from usseg.methods.context_aware.losses import (
    cell_classification_loss,
    cell_kl_loss,
    cosine_logits,
    picie_losses,
)
from usseg.methods.context_aware.model import ResNetFPN, build_model
from usseg.methods.context_aware.params import PredictParams, TrainParams
from usseg.methods.context_aware.predict import predict
from usseg.methods.context_aware.psg import PyramidCells, psg_losses
from usseg.methods.context_aware.views import Geometric, apply_geometric, photometric, sample_geometric
from usseg.params import deep_merge

REPO = Path(__file__).resolve().parents[1]


def group(**overrides: Any) -> dict[str, Any]:
    """params.yaml's context_aware group shrunk to a CPU-seconds network."""
    base = yaml.safe_load((REPO / "params.yaml").read_text())["context_aware"]
    tiny = {
        "arch": "resnet18", "fpn_dim": 16, "dim": 16, "image_size": 32, "epochs": 2, "batch_size": 4,
        "cluster_batch_size": 4, "cluster_init_batches": 1, "workers": 0, "device": "cpu", "k": 3,
        "psg_levels": [1, 2], "psg_k": 2, "cae_window": 3,
    }
    return deep_merge(deep_merge(base, tiny), overrides)


def group_params(**overrides: Any) -> TrainParams:
    """The training step's typed parameters of that group, parsed and checked as its CLI does."""
    return typed_params(TrainParams, group(**overrides), "context_aware")


def predict_params(**overrides: Any) -> PredictParams:
    return typed_params(PredictParams, group(**overrides), "context_aware")


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ca") / "demo"
    params = demo.DemoParams(split="val", seed=0, min_side=40, max_side=56, splits={"val": 6})
    demo.prepare(None, root, params)
    return root


# ---- views -----------------------------------------------------------------------------------


def test_a_pixel_maps_back_to_itself():
    """A pixel-aligned crop + flip: every view pixel holds the source pixel the box says."""
    src = torch.rand(1, 3, 16, 16)
    geo = Geometric(boxes=torch.tensor([[4 / 16, 2 / 16, 12 / 16, 10 / 16]]), flips=torch.tensor([True]))
    view = apply_geometric(src, geo, (8, 8))
    rows = torch.arange(8)[:, None]
    cols = torch.arange(8)[None, :]
    expected = src[0][:, 2 + rows, 4 + (7 - cols)]
    assert torch.allclose(view[0], expected, atol=1e-6)
    geo.flips[0] = False
    assert torch.allclose(apply_geometric(src, geo, (8, 8))[0], src[0][:, 2 + rows, 4 + cols], atol=1e-6)


def test_feature_alignment_commutes_with_the_crop():
    """Resampling a stride-4 map of the image equals the stride-4 map of the cropped view."""
    h = w = 64
    yy, xx = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    coords = torch.stack([xx, yy])[None].repeat(3, 1, 1, 1)  # an equivariant "network": pixel positions
    geo = sample_geometric(3, torch.Generator().manual_seed(1), (0.5, 1.0), (0.75, 1.33), 0.5)
    assert bool(geo.flips.any()) and not bool(geo.flips.all())
    view_features = F.avg_pool2d(apply_geometric(coords, geo), 4)
    aligned = apply_geometric(F.avg_pool2d(coords, 4), geo, (16, 16))
    inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))  # border cells clamp by design
    assert torch.allclose(aligned[inner], view_features[inner], atol=1e-4)
    boxes = geo.boxes
    assert bool(((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) >= 0.5 - 1e-6).all())


def test_photometric_views_are_seeded_and_in_range():
    x = torch.rand(4, 3, 24, 24)
    cfg = group_params().views
    a = photometric(x, torch.Generator().manual_seed(3), cfg)
    b = photometric(x, torch.Generator().manual_seed(3), cfg)
    assert torch.equal(a, b) and a.shape == x.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and not torch.allclose(a, x)
    grey = photometric(x, torch.Generator().manual_seed(0), dataclasses.replace(cfg, grey_prob=1.0, blur_prob=0.0))
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])


# ---- CAE -------------------------------------------------------------------------------------


def two_colour_image() -> torch.Tensor:
    """5x5: columns 0-1 black, columns 2-4 white."""
    rgb = torch.zeros(1, 3, 5, 5)
    rgb[..., 2:] = 1.0
    return rgb


def test_bilateral_weights_on_a_known_image():
    w = bilateral_weights(two_colour_image(), window=3, sigma_spatial=1.0, sigma_colour=0.01)
    assert w.shape == (1, 9, 5, 5)
    assert torch.allclose(w.sum(1), torch.ones(1, 5, 5))
    e1, e2 = math.exp(-0.5), math.exp(-1.0)
    # Interior of the white part: the full 3x3 Gaussian.
    full = torch.tensor([e2, e1, e2, e1, 1, e1, e2, e1, e2]) / (1 + 4 * e1 + 4 * e2)
    assert torch.allclose(w[0, :, 2, 3], full, atol=1e-6)
    # On the colour edge: the black column gets no weight, the rest is the Gaussian renormalised.
    edge = torch.tensor([0, e1, e2, 0, 1, e1, 0, e1, e2]) / (1 + 3 * e1 + 2 * e2)
    assert torch.allclose(w[0, :, 2, 2], edge, atol=1e-6)
    # Image corner: only the in-image neighbours count.
    corner = torch.tensor([0, 0, 0, 0, 1, e1, 0, e1, e2]) / (1 + 2 * e1 + e2)
    assert torch.allclose(w[0, :, 0, 0], corner, atol=1e-6)


def test_aggregate_averages_within_the_surface():
    rgb = two_colour_image()
    x = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5)
    g = aggregate(x, bilateral_weights(rgb, 3, 1.0, 0.01))
    assert abs(float(g[0, 0, 2, 3]) - 3.0) < 1e-5  # symmetric window inside the white part
    assert float(g[0, 0, 2, 2]) > 2.0  # the edge pixel only sees columns 2 and 3, never 1
    wide = aggregate(x, bilateral_weights(rgb, 3, 1.0, 1e4))
    assert abs(float(wide[0, 0, 2, 2]) - 2.0) < 1e-5  # colour-blind: plain spatial average


def test_cae_module_shapes_and_gradients():
    cae = ContextAwareEmbedding(8, window=5, sigma_spatial=2.0, sigma_colour=0.1)
    f = torch.randn(2, 8, 6, 6, requires_grad=True)
    out = cae(f, torch.rand(2, 3, 24, 24))
    assert out.shape == (2, 8, 6, 6)
    out.square().sum().backward()
    assert f.grad is not None and float(f.grad.abs().sum()) > 0
    assert float(cae.fuse.weight.grad.abs().sum()) > 0
    local = ContextAwareEmbedding(8, window=3, sigma_spatial=1.0, sigma_colour=0.1, use_global=False)
    assert local.fuse.in_channels == 16 and local(f, torch.rand(2, 3, 24, 24)).shape == (2, 8, 6, 6)
    with pytest.raises(ValueError, match="cae_window"):
        bilateral_weights(torch.rand(1, 3, 4, 4), 4, 1.0, 1.0)


# ---- losses ----------------------------------------------------------------------------------


def test_picie_losses_shapes_and_gradients():
    torch.manual_seed(0)
    l1 = torch.randn(2, 4, 5, 5, requires_grad=True)
    l2 = torch.randn(2, 4, 5, 5, requires_grad=True)
    within, cross = picie_losses(l1, l2)
    assert within.shape == () and cross.shape == () and float(cross) > float(within) > 0
    (within + cross).backward()
    assert float(l1.grad.abs().sum()) > 0 and float(l2.grad.abs().sum()) > 0
    same = l1.detach().clone()
    w2, c2 = picie_losses(same, same)
    assert torch.allclose(w2, c2)


def test_cell_losses_shapes_and_gradients():
    torch.manual_seed(0)
    centroids = F.normalize(torch.randn(5, 8), dim=1)
    cell_centroids = F.normalize(torch.randn(3, 8), dim=1)
    features = torch.randn(2, 8, 8, 8, requires_grad=True)
    labels = torch.randint(0, 3, (2, 2, 2))
    cell = cell_classification_loss(features, cell_centroids, labels, 2, 0.1)
    logits = cosine_logits(F.normalize(features, dim=1), centroids, 0.1)
    kl = cell_kl_loss(logits, centroids, cell_centroids, labels, 2, 0.1)
    assert cell.shape == () and kl.shape == () and float(cell) > 0 and float(kl) >= 0
    (cell + kl).backward()
    assert float(features.grad.abs().sum()) > 0
    # A map whose every pixel already has the target distribution has zero KL.
    target = (cell_centroids[labels] @ centroids.T / 0.1).softmax(-1).permute(0, 3, 1, 2)
    exact = F.interpolate(target, scale_factor=4, mode="nearest").log()
    assert float(cell_kl_loss(exact, centroids, cell_centroids, labels, 2, 0.1)) < 1e-5


def gathered(cells: dict[int, np.ndarray], fit_images: int | None, batch: int = 4) -> PyramidCells:
    """``cells`` (per level N x n x n x D) added batch by batch, as a clustering pass does."""
    n_images = len(next(iter(cells.values())))
    pyramid = PyramidCells(list(cells), n_images, fit_images, seed=0)
    for start in range(0, n_images, batch):
        index = np.arange(start, min(start + batch, n_images))
        pyramid.add(index, {n: x[index] for n, x in cells.items()})
    return pyramid


def test_psg_targets_and_losses():
    rng = np.random.default_rng(0)
    cells = {1: rng.normal(size=(6, 1, 1, 8)), 2: rng.normal(size=(6, 2, 2, 8))}
    targets = gathered(cells, None).fit(k=3, niter=10, seed=0)
    assert targets.labels[1].shape == (6, 1, 1) and targets.labels[2].shape == (6, 2, 2)
    assert targets.centroids[2].shape == (3, 8) and int(targets.labels[2].max()) < 3
    features = torch.randn(2, 8, 4, 4, requires_grad=True)
    centroids = F.normalize(torch.randn(4, 8), dim=1)
    logits = cosine_logits(F.normalize(features, dim=1), centroids, 0.1)
    cell, kl = psg_losses(features, logits, centroids, targets, torch.tensor([0, 5]), 0.1, 0.5)
    (cell + kl).backward()
    assert float(features.grad.abs().sum()) > 0


def test_psg_cells_fit_on_all_images_equals_one_kmeans_over_every_cell():
    """With the sample covering the split, labels are those of one k-means over all cells."""
    from usseg.methods.clustering import assign, fit_kmeans, l2_normalize

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 8)) * 4
    noisy = centres[rng.integers(0, 3, size=(10, 2, 2))] + rng.normal(size=(10, 2, 2, 8))
    cells = {2: noisy.astype(np.float32)}
    targets = gathered(cells, 10).fit(k=3, niter=10, seed=0)
    flat = l2_normalize(cells[2].reshape(-1, 8))
    km = fit_kmeans(flat, 3, 10, 1, 0 + 2, spherical=True)
    assert np.array_equal(targets.labels[2].numpy(), assign(km, flat).reshape(10, 2, 2))
    assert targets.labels[2].dtype == torch.int16


def test_psg_cells_memory_does_not_grow_with_the_split():
    """4x the images: the same peak of Python-allocated memory (the int16 labels aside)."""
    import tracemalloc

    def peak(n_images: int) -> int:
        rng = np.random.default_rng(0)
        pyramid = PyramidCells([1, 2, 4], n_images, fit_images=64, seed=0, chunk=64)
        tracemalloc.start()
        for start in range(0, n_images, 16):
            index = np.arange(start, start + 16)
            pyramid.add(index, {n: rng.normal(size=(16, n, n, 32)).astype(np.float32) for n in (1, 2, 4)})
        targets = pyramid.fit(k=4, niter=5, seed=0)
        labels = sum(t.numel() * 2 for t in targets.labels.values())
        peak_bytes = tracemalloc.get_traced_memory()[1] - labels
        tracemalloc.stop()
        assert sorted(targets.labels) == [1, 2, 4] and len(targets.labels[4]) == n_images
        return peak_bytes

    small, large = peak(512), peak(2048)
    # all cells in memory would be 21 x 32 x 4 B = 2.7 kB per image: +4 MB at 4x
    assert large < small * 1.1, (small, large)


# ---- clustering ------------------------------------------------------------------------------


def test_minibatch_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.eye(4, 16, dtype=np.float32)
    points = centres[rng.integers(0, 4, 4000)] + rng.normal(0, 0.05, (4000, 16)).astype(np.float32)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    km = MiniBatchKMeans(k=4, niter=10, init_batches=2, seed=0)
    for batch in np.array_split(points, 8):
        km.add(batch)
    centroids, counts = km.finish()
    assert counts.sum() == 4000
    assert np.allclose(np.sort((centroids @ centres.T).max(0)), 1.0, atol=0.01)
    assert cluster_stats(counts)["size_entropy"] > 0.99
    assert cluster_stats(np.array([10, 0, 0]))["size_entropy"] == 0.0
    with pytest.raises(UssegError, match="context_aware.k=4"):
        tiny = MiniBatchKMeans(k=4, niter=5, init_batches=1, seed=0)
        tiny.add(points[:3])


# ---- model -----------------------------------------------------------------------------------


def test_embedder_output_stride_and_ablation_switch():
    torch.manual_seed(0)
    with_cae = build_model(group_params())
    without = build_model(group_params(cae=False))
    x = torch.rand(2, 3, 32, 32)
    assert with_cae(x).shape == without(x).shape == (2, 16, 8, 8)
    assert with_cae.cae is not None and without.cae is None


def test_dino_resnet_checkpoint_keys_load(tmp_path):
    torch.manual_seed(1)
    source = torchvision.models.resnet18(weights=None)
    dino = {"teacher": {f"module.backbone.{k}": v for k, v in source.state_dict().items() if not k.startswith("fc.")},
            "epoch": 100}
    path = tmp_path / "dino_resnet.pth"
    torch.save(dino, path)
    trunk = ResNetFPN("resnet18", 16, str(path))
    assert torch.equal(trunk.stem[0].weight, source.conv1.weight)
    assert torch.equal(trunk.layers[3][1].bn2.running_var, source.layer4[1].bn2.running_var)
    torch.save({"state_dict": {"encoder_q.conv1.weight": source.conv1.weight}}, tmp_path / "partial.pth")
    with pytest.raises(UssegError, match="partial.pth lacks"):
        ResNetFPN("resnet18", 16, str(tmp_path / "partial.pth"))


# ---- training, resume, prediction ------------------------------------------------------------


def final_state(model_dir: Path) -> dict[str, Any]:
    return torch.load(model_dir / "final.pt", weights_only=True)


def test_training_loss_decreases(tiny_dataset):
    """Adam steps through the real views, network and every loss term lower the loss.

    The views are regenerated from the same seed each step and the clustering is held
    fixed, as within an epoch, so what changes is the network alone.
    """
    from usseg.artifacts.prepared import PreparedDataset
    from usseg.methods.context_aware.data import WarpedImages

    params = group_params(lr=1e-3)
    torch.manual_seed(0)
    model = build_model(params)
    dataset = PreparedDataset(tiny_dataset)
    images = WarpedImages(dataset, dataset.records("val"), 32)
    centroids, counts, targets = train_mod.clustering_pass(model, images, params, 3, 0, torch.device("cpu"))
    assert counts.sum() == 6 * 8 * 8 and targets is not None
    index = torch.arange(4)
    x = torch.stack([images[i][1] for i in range(4)]).float() / 255
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    losses = []
    for _ in range(8):
        loss, parts = train_mod.step_losses(model, x, index, centroids, targets, params, torch.Generator().manual_seed(0))
        assert {"loss_within", "loss_cross", "loss_cell", "loss_kl"} <= set(parts)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert losses[-1] < 0.7 * losses[0]


def test_resume_gives_the_same_weights(tiny_dataset, tmp_path, monkeypatch):
    metrics: list[tuple[dict[str, float], int]] = []
    params = group_params()
    straight = train_mod.train(tiny_dataset, "val", tmp_path / "a", params,
                               log_metrics=lambda m, s: metrics.append((dict(m), s)))
    assert {"loss", "loss_within", "loss_cross", "loss_cell", "loss_kl"} <= set(metrics[0][0])
    assert any("cluster_size_entropy" in m for m, _ in metrics)

    real = train_mod.clustering_pass

    def interrupted(model, images, p, k, epoch, device):
        if epoch == 1:
            raise KeyboardInterrupt
        return real(model, images, p, k, epoch, device)

    monkeypatch.setattr(train_mod, "clustering_pass", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_mod.train(tiny_dataset, "val", tmp_path / "b", params)
    assert not (tmp_path / "b").exists()
    assert [p.name for p in (tmp_path / "b.partial" / "checkpoints").iterdir()] == ["epoch_0000.pt"]
    monkeypatch.setattr(train_mod, "clustering_pass", real)
    resumed = train_mod.train(tiny_dataset, "val", tmp_path / "b", params)

    a, b = final_state(straight), final_state(resumed)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert torch.equal(a["centroids"], b["centroids"])
    history = json.loads((resumed / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [0, 1]


def test_predict_writes_soft_and_hard_scores(tiny_dataset, tmp_path):
    params = group_params(epochs=1)
    model_dir = train_mod.train(tiny_dataset, "val", tmp_path / "model", params)
    predict(model_dir, tiny_dataset, "val", tmp_path / "soft.zarr", predict_params())
    soft = open_predictions(tmp_path / "soft.zarr")
    assert soft.attrs["kind"] == "soft" and soft["scores"].shape == (6, 3, 8, 8)
    assert np.allclose(soft["scores"].values.sum(1), 1.0, atol=1e-5)
    predict(model_dir, tiny_dataset, "val", tmp_path / "hard.zarr", predict_params(output="hard"))
    hard = open_predictions(tmp_path / "hard.zarr")
    assert np.array_equal(hard["labels"].values, soft["scores"].values.argmax(1))
    with pytest.raises(UssegError, match="not a finished"):
        predict(tmp_path, tiny_dataset, "val", tmp_path / "x.zarr", predict_params())


def test_vit_option_trains_only_the_head(random_vits14, tiny_dataset, tmp_path):
    params = group_params(arch="vit", image_size=42, epochs=1, vit_facet="token")
    model_dir = train_mod.train(tiny_dataset, "val", tmp_path / "model", params, "dinov2_vits14", random_vits14)
    saved = final_state(model_dir)["model"]
    assert saved and not any(k.startswith("trunk.vit.") for k in saved)  # frozen: rebuilt from its weights
    model, _, trained = train_mod.load_trained(model_dir, random_vits14)
    assert not any(p.requires_grad for p in model.trunk.parameters())
    assert trained == params  # the typed parameters round-trip through config.json
    predict(model_dir, tiny_dataset, "val", tmp_path / "vit.zarr", predict_params(), random_vits14)
    assert open_predictions(tmp_path / "vit.zarr")["scores"].shape == (6, 3, 3, 3)


# ---- the DAG ---------------------------------------------------------------------------------


@pytest.mark.e2e
def test_branch_end_to_end(workdir, tmp_path):
    """prepare -> train -> predict -> refine -> evaluate, with step metrics in MLflow."""
    import mlflow

    from conftest import jobs_planned, run_workflow, tiny_params

    small = {"arch": "resnet18", "fpn_dim": 16, "dim": 16, "image_size": 32, "epochs": 2, "batch_size": 3,
             "cluster_batch_size": 6, "cluster_init_batches": 1, "workers": 0, "cae_window": 3}
    experiments = [{"name": "ca", "method": "context_aware", "dataset": "demo", "backbone": "dinov2_vits14",
                    "overrides": {"context_aware": small}}]
    (tmp_path / "unused.safetensors").touch()  # a local weights file must exist (validate)
    wf = workdir(tiny_params(tmp_path / "unused.safetensors", experiments))
    run_workflow(wf)
    metrics = json.loads((wf / "results/context_aware/ca/eval/metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["num_images"] == 6
    assert (wf / "results/context_aware/ca/model/final.pt").is_file()
    assert open_predictions(wf / "results/context_aware/ca/patch_scores.zarr").attrs["kind"] == "soft"
    assert jobs_planned(wf) == []

    client = mlflow.MlflowClient(f"sqlite:///{wf / 'results/mlflow.db'}")
    exp = client.get_experiment_by_name("usseg")
    runs = client.search_runs([exp.experiment_id], "tags.`usseg.job` = 'context_aware_train'")
    assert len(runs) == 1
    steps = client.get_metric_history(runs[0].info.run_id, "loss")
    assert len(steps) == 2 * 2 and sorted(m.step for m in steps) == [0, 1, 2, 3]
    assert client.get_metric_history(runs[0].info.run_id, "cluster_size_entropy")
