"""`usseg grid`: the same few images of one dataset across every experiment on it, one picture.

Each experiment's predictions are coloured by the class each cluster is matched to under its
headline matching (read from its eval/metrics.json), so rows compare directly with each other
and with the ground-truth row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from usseg.artifacts.atomic import atomic_file
from usseg.artifacts.label_maps import read_map
from usseg.artifacts.metrics import FULL_NAME
from usseg.artifacts.prepared import PreparedDataset
from usseg.errors import UssegError
from usseg.evaluation.pictures import blend, legend_handles, overlay_colours  # sets the Agg backend


@dataclass(frozen=True)
class GridRow:
    """One experiment: its name and caption, label maps and headline cluster -> class mapping."""

    name: str
    title: str
    labels_dir: Path
    mapping: list[int]
    split: str


@dataclass(frozen=True)
class Grid:
    """What was drawn: row titles (image, ground truth, then one per experiment), image ids, legend."""

    rows: list[str]
    columns: list[str]
    legend: list[tuple[str, tuple[int, int, int]]]


def read_row(eval_dir: Path, labels_dir: Path) -> GridRow:
    """An experiment's row from its evaluation report (metrics.json) and its final label maps."""
    path = eval_dir / FULL_NAME
    if not path.is_file():
        raise UssegError(f"{eval_dir}: no {FULL_NAME} (not a finished evaluation report)")
    metrics = json.loads(path.read_text())
    matching = metrics["matching"]
    name = metrics.get("experiment", eval_dir.parent.name)
    title = (f"{name}\n{metrics.get('method', '?')}, {metrics.get('backbone', '?')}, crf {metrics['crf']}\n"
             f"mIoU {100 * metrics['mIoU']:.1f} ({matching})")
    mapping = metrics["protocols"]["default"][matching]["cluster_to_class"]
    return GridRow(name, title, labels_dir, list(mapping), metrics["split"])


def grid_figure(dataset: PreparedDataset, rows: Sequence[GridRow], images: int, path: Path) -> Grid:
    """Draw the first ``images`` scored images of the split: rows image, ground truth, each experiment."""
    if not rows:
        raise UssegError(f"dataset {dataset.name!r}: no experiment to draw in the grid")
    splits = {row.split for row in rows}
    if len(splits) != 1:
        raise UssegError(f"dataset {dataset.name!r}: experiments scored on different splits {sorted(splits)}")
    records = [r for r in dataset.records(splits.pop()) if r.label_path is not None][:images]
    if not records:
        raise UssegError(f"dataset {dataset.name!r}: no image with ground truth to draw")
    palette = np.asarray(dataset.meta["palette"], np.uint8)
    titles = ["image", "ground truth", *(row.title for row in rows)]
    size = (max(6.0, 2.4 * len(records) + 1.6), 2.2 * len(titles) + 0.8)  # wide enough for the legend
    fig, axes = plt.subplots(len(titles), len(records), figsize=size, squeeze=False)
    legend: dict[str, tuple[int, int, int]] = {}
    for col, record in enumerate(records):
        image, gt = dataset.load_image(record), dataset.load_label(record)
        tiles = [image]
        for row in rows:
            overlay = overlay_colours(read_map(row.labels_dir, record.id), gt, row.mapping, palette,
                                      dataset.classes)
            if len(tiles) == 1:
                tiles.append(blend(image, overlay.ground_truth))
            tiles.append(blend(image, overlay.prediction))
            legend.update(overlay.legend)
        for r, tile in enumerate(tiles):
            ax = axes[r, col]
            ax.imshow(tile)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(record.id, fontsize=8)
            if col == 0:
                ax.set_ylabel(titles[r], fontsize=7)
    order = {name: i for i, name in enumerate(dataset.classes)}
    entries = sorted(legend.items(), key=lambda kv: order.get(kv[0], len(order)))
    fig.suptitle(f"{dataset.name}: predictions coloured by matched class", fontsize=9)
    ncol = max(1, min(len(entries), int(size[0] // 1.4)))
    fig.legend(handles=legend_handles(entries), loc="lower center", ncol=ncol, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.6 / fig.get_figheight(), 1, 1))
    with atomic_file(path, "wb") as fh:
        fig.savefig(fh, dpi=100, format="png")
    plt.close(fig)
    return Grid(titles, [r.id for r in records], entries)
