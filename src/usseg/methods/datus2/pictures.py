"""Pictures of the branch's intermediate steps: communities, valid segments, pseudo-mask, truth.

Patch-level maps are drawn with nearest interpolation over the image so every panel
shows what the method saw, not a smoothed version of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from usseg.artifacts.prepared import default_palette

ID_COLOURS = np.asarray(default_palette(256), np.uint8)
ID_COLOURS[255] = 255  # unlabelled / ignore drawn white


def colour_ids(ids: np.ndarray, palette: np.ndarray = ID_COLOURS) -> np.ndarray:
    """Id map -> RGB; negative (invalid segment) black, 255 white, ids cycle the VOC palette."""
    out = palette[np.where(ids < 0, 0, ids) % len(palette)]
    out[ids < 0] = 0
    return out


def panel_figure(
    image: np.ndarray,
    communities: np.ndarray,
    segments: np.ndarray,
    mask: np.ndarray,
    truth: np.ndarray | None,
    truth_palette: np.ndarray,
    path: Path,
    title: str,
) -> None:
    """One row: image, Louvain communities, valid segments (invalid black), pseudo-mask, truth."""
    h, w = image.shape[:2]
    panels: list[tuple[str, np.ndarray]] = [
        ("image", image),
        (f"communities ({int(communities.max()) + 1})", colour_ids(communities + 1)),
        (f"valid segments ({int(segments.max()) + 1}, invalid black)", colour_ids(segments + 1)),
        ("pseudo-mask (unlabelled white)", colour_ids(np.where(mask == 255, 255, mask.astype(np.int64) + 1))),
    ]
    if truth is not None:
        palette = np.full((256, 3), 255, np.uint8)
        palette[: len(truth_palette)] = truth_palette
        panels.append(("ground truth", palette[truth]))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.8 * len(panels), 2.8 * h / w + 0.6))
    for ax, (name, arr) in zip(axes, panels):
        ax.imshow(arr, interpolation="nearest", extent=(0, w, h, 0))
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_panels(
    folder: Path,
    images: Sequence[tuple[str, np.ndarray, np.ndarray | None]],
    communities: np.ndarray,
    segments: np.ndarray,
    masks: np.ndarray,
    truth_palette: np.ndarray,
) -> list[Path]:
    """Draw ``images`` ((id, RGB, truth) in store order) into ``folder``; return the PNG paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (image_id, image, truth) in enumerate(images):
        path = folder / f"{image_id}.png"
        panel_figure(image, communities[i], segments[i], masks[i], truth, truth_palette, path, image_id)
        paths.append(path)
    return paths
