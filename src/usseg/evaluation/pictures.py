"""Pictures people would rather look at: confusion matrix, per-class bars, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Class ids -> colours; ignored/unlabelled (255) drawn white."""
    lut = np.full((256, 3), 255, np.uint8)
    lut[: len(palette)] = palette
    return lut[label]


def overlay_figure(image: np.ndarray, gt: np.ndarray | None, pred: np.ndarray, palette: np.ndarray,
                   path: Path, title: str) -> None:
    panels = [("image", image), ("prediction (matched)", (0.45 * image + 0.55 * colorize(pred, palette)).astype(np.uint8))]
    if gt is not None:
        panels.append(("ground truth", (0.45 * image + 0.55 * colorize(gt, palette)).astype(np.uint8)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (name, arr) in zip(axes, panels):
        ax.imshow(arr)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
