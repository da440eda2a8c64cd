"""One picture per image showing every stage of the branch side by side.

Reading the levels next to each other is how one sees where consistency helps (a level
inverted on one image, a category swallowing the background) and where the CRF or the
labelling goes wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from usseg.artifacts.atomic import atomic_file
from usseg.artifacts.label_maps import colorize

FOREGROUND_TINT = np.asarray([255, 64, 32], dtype=np.float32)


def tint(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The image with foreground pixels tinted and background darkened."""
    img = image.astype(np.float32)
    fg = mask.astype(bool)[..., None]
    out = np.where(fg, 0.5 * img + 0.5 * FOREGROUND_TINT, 0.35 * img)
    return out.clip(0, 255).astype(np.uint8)


def panel(
    path: Path,
    image: np.ndarray,
    masks: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    truth: np.ndarray | None,
    palette: np.ndarray,
    title: str,
) -> None:
    """Image, each binary mask (tinted), final labels and ground truth (palette colours)."""
    tiles = [("image", image), *((name, tint(image, m)) for name, m in masks)]
    tiles.append(("labels (cluster ids)", colorize(labels, palette)))
    if truth is not None:
        tiles.append(("ground truth", colorize(truth, palette)))
    fig, axes = plt.subplots(1, len(tiles), figsize=(2.6 * len(tiles), 2.9))
    for ax, (name, arr) in zip(np.atleast_1d(axes), tiles):
        ax.imshow(arr)
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=90)
    plt.close(fig)
