"""The project's hashes: content digests of files and folders (a metric traces to exact bytes) and
the digest of a parameter set (what a shared output, a store or a run is keyed by)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from usseg.errors import UssegError

# Snakemake drops `.snakemake_timestamp` into directory outputs after the job ends, so the
# producing job and its consumers would otherwise see different digests of one folder.
MARKER_PREFIX = ".snakemake"


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes: the project's one file hash (weights, downloads, lineage)."""
    with Path(path).open("rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def params_hash(obj: Any) -> str:
    """16 hex digits of sha256 over ``obj`` as sorted JSON: equal parameters, equal key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def digest_path(path: str | Path) -> str:
    """sha256 of a file, or of a folder's (relative path, file digest) list.

    A Zarr store records its digest in its attributes when it is written; that value is
    used instead of re-reading gigabytes of chunks.
    """
    path = Path(path)
    if path.is_file():
        return file_digest(path)
    if not path.is_dir():
        raise UssegError(f"cannot digest {path}: it does not exist")
    zattrs = path / "zarr.json"
    if zattrs.is_file():
        recorded = json.loads(zattrs.read_text()).get("attributes", {}).get("digest")
        if recorded:
            return str(recorded)
    return digest_tree(path)


def is_marker(path: Path) -> bool:
    """A bookkeeping file of the workflow engine, not content."""
    return path.name.startswith(MARKER_PREFIX)


def digest_tree(path: Path) -> str:
    """sha256 over the sorted (relative path, file digest) pairs, markers excluded."""
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not is_marker(p)):
        h.update(file.relative_to(path).as_posix().encode())
        h.update(file_digest(file).encode())
    return h.hexdigest()
