"""One exception type for bad input, so the CLI can print it without a traceback."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class UssegError(Exception):
    """Bad input or configuration; the message names the file, image id or parameter."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def free_bytes(path: str | Path) -> int:
    """Free space on the file system that holds ``path`` (or its nearest existing parent)."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def disk_full(out: str | Path, needed: int | None = None) -> UssegError:
    """What a stage says when its output does not fit: where, what is free, what it needs."""
    need = f"; it needs up to {mb(needed)}" if needed else ""
    return UssegError(
        f"no space left on the device writing {out}: {mb(free_bytes(out))} free there{need}. "
        "Free some space (or point the output elsewhere) and run it again: it resumes what it finished"
    )
