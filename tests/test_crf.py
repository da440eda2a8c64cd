"""Dense CRF: the pydensecrf reference, the torch CRF's parity with it, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from usseg.device import pick_device
from usseg.errors import UssegError
from usseg.refine.crf_reference import dense_crf
from usseg.refine.crf_torch import Permutohedral, batches, dense_crf_batch
from usseg.refine.image import unary
from usseg.refine.params import CRFParams, settings

REPO = Path(__file__).resolve().parents[1]
PRESETS = yaml.safe_load((REPO / "params.yaml").read_text())["refine"]["presets"]
STEGO = CRFParams(**PRESETS["stego"])
DSM = CRFParams(**PRESETS["dsm"])
CPU = torch.device("cpu")


def regions(h: int = 48, w: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An image of three flat colour regions (+ a little noise) and its label map."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((h, w), np.uint8)
    truth[h // 2 :, : w // 2] = 1
    truth[h // 2 :, w // 2 :] = 2
    colours = np.array([[200, 40, 40], [30, 170, 60], [40, 50, 210]], np.float64)
    image = colours[truth] + rng.normal(0, 8, (h, w, 3))
    return np.clip(image, 0, 255).astype(np.uint8), truth


def noisy_probs(truth: np.ndarray, k: int, noise: float, seed: int = 1) -> np.ndarray:
    """Probabilities that favour the truth only weakly, with strong per-pixel noise."""
    rng = np.random.default_rng(seed)
    logits = 1.0 * np.eye(k)[truth].transpose(2, 0, 1) + rng.normal(0, noise, (k, *truth.shape))
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def test_presets_are_the_papers_values() -> None:
    assert STEGO == CRFParams(10, 1, 3, 67, 3, 4)
    assert DSM == CRFParams(5, 3, 3, 80, 13, 10)


@pytest.mark.parametrize("params", [STEGO, DSM])
def test_reference_crf_cleans_a_noisy_prediction(params: CRFParams) -> None:
    image, truth = regions()
    probs = noisy_probs(truth, 3, noise=1.0)
    before = (probs.argmax(0) == truth).mean()
    q = dense_crf(image, unary(probs, 1e-5), params)
    after = (q.argmax(0) == truth).mean()
    assert before < 0.8
    assert after > 0.97
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-4)


@pytest.mark.parametrize("params", [STEGO, DSM])
def test_torch_crf_agrees_with_pydensecrf(params: CRFParams) -> None:
    image, truth = regions()
    u = unary(noisy_probs(truth, 3, noise=1.5), 1e-5)
    ref = dense_crf(image, u, params)
    got = dense_crf_batch(image[None], u[None], params, CPU)[0].numpy()
    assert (ref.argmax(0) == got.argmax(0)).mean() >= 0.98
    # Same lattice, same arithmetic: the marginals agree to float rounding, not just the labels.
    assert np.abs(ref - got).max() < 1e-3


def test_torch_batch_keeps_images_apart() -> None:
    """A batch is one lattice; the image index in the vertex code keeps images separate."""
    (a, ta), (b, tb) = regions(seed=0), regions(seed=5)
    b = b[:, ::-1].copy()  # a different layout of the same colours
    tb = tb[:, ::-1]
    ua, ub = unary(noisy_probs(ta, 3, 1.5, seed=2), 1e-5), unary(noisy_probs(tb, 3, 1.5, seed=3), 1e-5)
    both = dense_crf_batch(np.stack([a, b]), np.stack([ua, ub]), STEGO, CPU).numpy()
    one = dense_crf_batch(b[None], ub[None], STEGO, CPU)[0].numpy()
    np.testing.assert_allclose(both[1], one, atol=1e-5)


def test_lattice_blur_is_a_normalised_gaussian() -> None:
    """Filtering a constant gives a near-constant away from borders (a Gaussian's mass)."""
    ys, xs = np.mgrid[0:40, 0:40].astype(np.float32)
    feats = torch.tensor(np.stack([xs.ravel(), ys.ravel()], 1) / 3.0)
    lattice = Permutohedral(feats, torch.zeros(len(feats), dtype=torch.long), 1)
    out = lattice.filter(torch.ones(len(feats), 1)).reshape(40, 40).numpy()
    centre = out[12:28, 12:28]
    assert centre.std() / centre.mean() < 0.05
    assert out[0, 0] < centre.mean()  # less mass at a corner


@pytest.mark.parametrize("k", [2, 21, 200])
def test_many_labels_and_tiny_images(k: int) -> None:
    rng = np.random.default_rng(k)
    for h, w in [(1, 1), (1, 5), (14, 14)]:
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        probs = rng.dirichlet(np.ones(k), size=(h, w)).transpose(2, 0, 1).astype(np.float32)
        ref = dense_crf(image, unary(probs, 1e-5), STEGO)
        got = dense_crf_batch(image[None], unary(probs, 1e-5)[None], STEGO, CPU)[0].numpy()
        assert ref.shape == got.shape == (k, h, w)
        assert (ref.argmax(0) == got.argmax(0)).all()


def test_one_label_is_defined() -> None:
    image, _ = regions(8, 8)
    q = dense_crf(image, np.zeros((1, 8, 8), np.float32), STEGO)
    assert q.shape == (1, 8, 8) and (q == 1).all()


@pytest.mark.parametrize(
    "image, u, message",
    [
        (np.zeros((4, 4, 3), np.float32), np.zeros((2, 4, 4), np.float32), "uint8"),
        (np.zeros((4, 4), np.uint8), np.zeros((2, 4, 4), np.float32), "uint8"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((2, 4, 5), np.float32), "does not match"),
        (np.zeros((4, 4, 3), np.uint8), np.full((2, 4, 4), np.nan, np.float32), "NaN"),
        (np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4, 4), np.float32), "labels"),
    ],
)
def test_bad_input_is_an_error_not_a_crash(image: np.ndarray, u: np.ndarray, message: str) -> None:
    with pytest.raises(UssegError, match=message):
        dense_crf(image, u, STEGO, where="image 'x'")


def test_non_contiguous_read_only_inputs_are_accepted() -> None:
    image, truth = regions()
    u = unary(noisy_probs(truth, 3, 1.0), 1e-5)
    flipped = image[:, ::-1]
    flipped.flags.writeable = False
    q = dense_crf(flipped, u[:, :, ::-1], STEGO)
    assert q.shape == u.shape


def test_too_fine_kernels_are_refused_clearly() -> None:
    image, truth = regions(64, 64)
    u = unary(noisy_probs(truth, 3, 1.0), 1e-5)
    tiny = CRFParams(1, 1e-7, 3, 1e-7, 1e-7, 4)
    with pytest.raises(UssegError, match="too small"):
        dense_crf_batch(image[None], u[None], tiny, CPU)
    with pytest.raises(UssegError, match="too small"):
        dense_crf(image, u, tiny)


def test_settings_resolve_presets_and_reject_bad_values() -> None:
    group = yaml.safe_load((REPO / "params.yaml").read_text())["refine"]
    assert settings(group).crf == "none" and settings(group).crf_params is None
    for off in (False, "off"):  # a bare YAML off (PyYAML: false), or "off" after DVC dropped its quotes
        with pytest.raises(UssegError, match="refine.crf: .*write none"):
            settings({**group, "crf": off})
    assert settings({**group, "crf": "dsm"}).crf_params == DSM
    with pytest.raises(UssegError, match="refine.crf"):
        settings({**group, "crf": "nope"})
    bad = {**group["presets"], "custom": {**group["presets"]["custom"], "bilateral_srgb": 0}}
    with pytest.raises(UssegError, match="custom.bilateral_srgb"):
        settings({**group, "crf": "custom", "presets": bad})
    with pytest.raises(UssegError, match="'colour' was unexpected"):
        settings({**group, "colour": 1})


def test_batches_group_same_sizes_and_devices() -> None:
    sizes = [(2, 3), (3, 2), (2, 3), (2, 3)]
    assert batches(sizes, 2, labels=3) == [[0, 2], [3], [1]]
    assert batches(sizes, 2, labels=3, max_elements=6) == [[0], [2], [3], [1]]
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(UssegError, match="refine.device"):
            pick_device("cuda", "refine.device")
