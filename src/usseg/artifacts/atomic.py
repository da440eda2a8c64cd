"""Write-to-temp-then-rename helpers: no reader ever sees a half-written artifact."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def partial_path(path: Path) -> Path:
    """Where the in-progress version of ``path`` lives until it is complete."""
    return path.with_name(path.name + ".partial")


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temp file beside ``path``; rename over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | Path, resume: bool = False) -> Iterator[Path]:
    """Yield ``<path>.partial``; it replaces ``path`` only when the block succeeds.

    With ``resume`` an existing partial folder is kept so the writer can continue it;
    otherwise it is cleared first.
    """
    path = Path(path)
    tmp = partial_path(path)
    if tmp.exists() and not resume:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    yield tmp
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    os.replace(tmp, path)


def clear_temp_files(folder: Path) -> None:
    """Delete the temp files ``atomic_file`` leaves behind when its process was killed."""
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically, sorted and indented so diffs stay readable."""
    with atomic_file(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
