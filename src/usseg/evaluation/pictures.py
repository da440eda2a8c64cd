"""Pictures people would rather look at: confusion matrix, per-class bars, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch

from usseg.artifacts.label_maps import IGNORE_COLOUR, colorize
from usseg.evaluation.matching import UNMATCHED


def confusion_figure(cm: np.ndarray, classes: Sequence[str], path: Path, title: str) -> None:
    """Row = true class, normalised per row; the extra column is 'none/unlabelled'."""
    true_by_pred = cm.T.astype(np.float64)
    norm = true_by_pred / np.maximum(true_by_pred.sum(axis=1, keepdims=True), 1)
    n = len(classes)
    size = max(5.0, 0.35 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(n + 1), [*classes, "none"], rotation=90, fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted (after matching)")
    ax.set_ylabel("ground truth")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def per_class_figure(iou: Sequence[float | None], classes: Sequence[str], path: Path, title: str) -> None:
    values = [np.nan if v is None else 100 * v for v in iou]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(classes) + 2), 3.5))
    ax.bar(range(len(classes)), np.nan_to_num(values), color="tab:blue")
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# Pixels no class explains: clusters the headline matching left unmatched (drawn as grey
# stripes, so they differ from any palette colour), and ignored/unlabelled pixels (white).
UNMATCHED_NAME = "unmatched"
UNMATCHED_STRIPES = ((200, 200, 200), (110, 110, 110))
IGNORE_NAME = "ignore / unlabelled"


@dataclass(frozen=True)
class Overlay:
    """An image's prediction and ground truth coloured by class, and the legend naming each colour.

    A predicted cluster takes the colour of the class it is matched to, so a correct pixel has
    the same colour in both panels.
    """

    prediction: np.ndarray
    ground_truth: np.ndarray | None
    legend: list[tuple[str, tuple[int, int, int]]]


def overlay_colours(pred: np.ndarray, gt: np.ndarray | None, mapping: Sequence[int], palette: np.ndarray,
                    classes: Sequence[str]) -> Overlay:
    """Colour cluster ids ``pred`` by matched class (``mapping[c]``, UNMATCHED = -1), ``gt`` by class."""
    mapping = np.asarray(mapping, np.int64)
    lut = np.full(256, 255, np.int64)  # cluster id -> class id; 255 = unlabelled, -1 = unmatched
    lut[: len(mapping)] = mapping
    pred_class = lut[pred]
    unmatched = pred_class == UNMATCHED
    prediction = colorize(np.where(unmatched, 255, pred_class).astype(np.uint8), palette)
    yy, xx = np.indices(pred.shape)
    stripes = np.asarray(UNMATCHED_STRIPES, np.uint8)[((yy + xx) // 4) % 2]
    prediction[unmatched] = stripes[unmatched]
    ground_truth = None if gt is None else colorize(gt, palette)
    shown = set(np.unique(pred_class[~unmatched]).tolist())
    if gt is not None:
        shown |= set(np.unique(gt).tolist())
    legend = [(classes[c], tuple(int(v) for v in palette[c])) for c in sorted(shown) if c < len(classes)]
    if unmatched.any():
        legend.append((UNMATCHED_NAME, UNMATCHED_STRIPES[0]))
    if any(c >= len(classes) for c in shown):
        legend.append((IGNORE_NAME, IGNORE_COLOUR))
    return Overlay(prediction, ground_truth, legend)


def blend(image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Colours over the image, the image still visible beneath."""
    return (0.45 * image + 0.55 * colours).astype(np.uint8)


def legend_handles(legend: Sequence[tuple[str, tuple[int, int, int]]]) -> list[Patch]:
    """Matplotlib patches for legend entries; the unmatched entry hatched like its stripes."""
    return [Patch(facecolor=np.asarray(rgb) / 255, edgecolor="0.3", label=name,
                  hatch="////" if name == UNMATCHED_NAME else None) for name, rgb in legend]


def overlay_figure(image: np.ndarray, overlay: Overlay, path: Path, title: str) -> None:
    """Image, prediction and ground truth side by side, with a legend of the classes shown."""
    panels = [("image", image), ("prediction (matched classes)", blend(image, overlay.prediction))]
    if overlay.ground_truth is not None:
        panels.append(("ground truth", blend(image, overlay.ground_truth)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 4.2))
    for ax, (name, arr) in zip(axes, panels):
        ax.imshow(arr)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    ncol = max(1, min(5, len(overlay.legend)))
    fig.legend(handles=legend_handles(overlay.legend), loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)
