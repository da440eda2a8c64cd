"""Dataset adapters by name. A dataset in params.yaml names its adapter (default: its name).

An adapter module has ``NEEDS_DOWNLOAD``, ``PARAMS`` (the dataclass of its entry's
parameters, usseg.datasets.params), ``prepare(raw, out, params)`` and, when it downloads,
``download(raw, params)``. One that reads a user's files instead may list them with
``input_files(params)``: they become inputs of the workflow's prepare job.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from usseg.errors import UssegError

ADAPTERS = {
    "demo": "usseg.datasets.demo",
    "folder": "usseg.datasets.folder",
    "voc2012": "usseg.datasets.voc2012",
    "cocostuff27": "usseg.datasets.cocostuff27",
    "coco81": "usseg.datasets.coco81",
    "suim": "usseg.datasets.suim",
}


def adapter(name: str) -> ModuleType:
    if name not in ADAPTERS:
        raise UssegError(f"unknown dataset adapter {name!r} (known: {sorted(ADAPTERS)})")
    return importlib.import_module(ADAPTERS[name])
