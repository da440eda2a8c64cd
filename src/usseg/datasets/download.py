"""Fetch a dataset's files: resumable download or a user's local copy, always checksummed.

A dataset's params list its files under ``archives``: ``{key: {url, checksum, mirror,
path, filename}}``. A file is fetched into ``<raw>/downloads/<key>/<filename>`` (growing
as ``<filename>.part`` until complete) and only renamed there after its digest matched;
a mismatch removes the downloaded bytes so no later run trusts them. Archives are then
extracted safely into ``<raw>/<key>/``. The whole raw folder is built in
``<raw>.partial`` (kept across failures so downloads resume) and renamed when complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from usseg.artifacts.atomic import atomic_dir, write_json
from usseg.artifacts.digest import file_digest
from usseg.datasets.archive import DEFAULT_MAX_EXPANSION, is_archive, safe_extract
from usseg.errors import UssegError

if TYPE_CHECKING:
    from usseg.datasets.params import BenchmarkParams, FileSpec

CHUNK = 1 << 20
ALGORITHMS = ("md5", "sha256")
TIMEOUT_S = 60


@dataclass(frozen=True)
class Source:
    """One file a dataset (or the DAG's checkpoint step) needs, as params.yaml describes it."""

    where: str  # the params key of this file, so errors say exactly what to set
    key: str
    filename: str
    url: str | None
    mirror: str | None
    path: str | None
    checksum: str | None
    include: tuple[str, ...] | None  # archive members to extract (path prefixes); None = all
    help: str | None  # where a user gets the file by hand, for the error when nothing works
    max_expansion: float = DEFAULT_MAX_EXPANSION  # extracted bytes allowed per archive byte

    def __post_init__(self) -> None:
        """A malformed checksum stops here, before a single byte is fetched."""
        if self.checksum is not None:
            parse_checksum(self.checksum, self.where)


def source(
    dataset: str,
    key: str,
    params: BenchmarkParams,
    include: Iterable[str] | None = None,
    help: str | None = None,
) -> Source:
    """The :class:`Source` for ``archives.<key>`` of a dataset's params."""
    if key not in params.archives:
        known = sorted(params.archives)
        raise UssegError(f"data.datasets.{dataset}.archives: no entry {key!r} (have {known})")
    return file_source(
        f"data.datasets.{dataset}.archives.{key}",
        key,
        params.archives[key],
        include=include,
        help=help,
        max_expansion=params.max_expansion,
    )


def file_source(
    where: str,
    key: str,
    spec: FileSpec,
    include: Iterable[str] | None = None,
    help: str | None = None,
    max_expansion: float = DEFAULT_MAX_EXPANSION,
) -> Source:
    """The :class:`Source` of one file's entry at ``where``."""
    origin = spec.path or spec.url or spec.mirror
    filename = spec.filename or (Path(urllib.parse.urlparse(origin).path).name if origin else None)
    if not filename:
        raise UssegError(f"{where}: set `filename`, `url` or `path`")
    return Source(
        where=where,
        key=key,
        filename=filename,
        url=spec.url,
        mirror=spec.mirror,
        path=spec.path,
        checksum=spec.checksum,
        include=tuple(include) if include is not None else None,
        help=help,
        max_expansion=max_expansion,
    )


def parse_checksum(text: str, where: str) -> tuple[str, str]:
    """``md5:<hex>`` / ``sha256:<hex>`` -> (algorithm, lower-case hex)."""
    algo, _, digest = text.partition(":")
    algo = algo.lower()
    size = hashlib.new(algo).digest_size * 2 if algo in ALGORITHMS else 0
    if (
        algo not in ALGORITHMS
        or len(digest) != size
        or any(c not in "0123456789abcdefABCDEF" for c in digest)
    ):
        raise UssegError(f"{where}.checksum: {text!r} is not 'md5:<32 hex>' or 'sha256:<64 hex>'")
    return algo, digest.lower()


def verify(path: Path, checksum: str, where: str) -> None:
    """Raise (naming the file, expected and actual digest) unless ``path`` matches."""
    algo, expected = parse_checksum(checksum, where)
    actual = file_digest(path, algo)
    if actual != expected:
        raise UssegError(
            f"checksum mismatch for {path} ({where}): expected {algo}:{expected}, got {algo}:{actual}"
        )


def _stream(url: str, part: Path, label: str) -> None:
    """Append ``url`` to ``part``, resuming with a Range request when the server allows it.

    A server that ignores the Range header answers 200 with the whole body; the partial
    file is then restarted instead of being appended to.
    """
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "usseg"})
    if offset and urllib.parse.urlparse(url).scheme in ("http", "https"):
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file already holds every byte
            return
        raise
    with response:
        resumed = bool(offset) and getattr(response, "status", None) == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with (
            part.open("ab" if resumed else "wb") as fh,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
            ) as bar,
        ):
            while block := response.read(CHUNK):
                fh.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size < total:
        raise UssegError(
            f"download of {label} from {url} stopped at {size} of {total} bytes; run again to resume"
        )


def _require_checksum(src: Source, got: Path) -> str:
    """The pinned checksum; unpinned, an error telling the digest of ``got`` to check and pin."""
    if src.checksum:
        return src.checksum
    raise UssegError(
        f"{src.where}.checksum is not set, and usseg knows no published checksum for {src.filename}; "
        f"a file is never used unverified. {got} has sha256:{file_digest(got, 'sha256')}: check it "
        f"against the source, then set {src.where}.checksum to that value."
    )


def _missing(src: Source, reasons: list[str]) -> UssegError:
    tried = "; ".join(reasons) if reasons else "no url, mirror or path is set"
    hint = f" Get it from {src.help}." if src.help else ""
    checksum = (
        f"expected checksum {src.checksum}"
        if src.checksum
        else "usseg knows no checksum for it: set .checksum to the sha256 of the file you obtained"
    )
    return UssegError(
        f"cannot obtain {src.filename} ({src.where}): {tried}.{hint} Save it locally and set "
        f"{src.where}.path to it ({checksum})."
    )


def fetch(src: Source, downloads: Path) -> Path:
    """The verified file for ``src`` under ``downloads``: a user's copy, or downloaded."""
    folder = downloads / src.key
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / src.filename
    if src.path:
        local = Path(src.path).expanduser()
        if not local.is_file():
            raise _missing(src, [f"{src.where}.path {local} is not a file"])
        verify(local, _require_checksum(src, local), f"{src.where}.path")  # never delete a user's file
        with contextlib.suppress(FileNotFoundError):
            final.unlink()
        try:
            os.link(local, final)
        except OSError:
            shutil.copyfile(local, final)
        return final
    if final.exists():  # complete and verified by an earlier, interrupted run: check again
        checksum = _require_checksum(src, final)
        try:
            verify(final, checksum, src.where)
            return final
        except UssegError:
            final.unlink()
    part = folder / (src.filename + ".part")
    reasons = []
    for url in (u for u in (src.url, src.mirror) if u):
        try:
            _stream(url, part, src.filename)
        except (OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            reasons.append(f"{url}: {exc}")
            continue
        checksum = _require_checksum(src, part)  # unpinned: says the digest, keeps the bytes
        try:
            verify(part, checksum, src.where)
        except UssegError as exc:
            part.unlink()
            raise UssegError(f"{exc}; it was downloaded from {url} and has been removed") from None
        os.replace(part, final)
        return final
    raise _missing(src, reasons)


def download_sources(raw: Path, sources: list[Source]) -> None:
    """Fetch, verify and extract ``sources`` into ``raw`` (built in ``raw.partial``)."""
    with atomic_dir(raw, resume=True) as tmp:
        manifest = {}
        for src in sources:
            path = fetch(src, tmp / "downloads")
            entry: dict[str, Any] = {
                "file": path.relative_to(tmp).as_posix(),
                "checksum": src.checksum,
                "from": src.path or src.url or src.mirror,
            }
            if is_archive(path):
                safe_extract(path, tmp / src.key, include=src.include, max_expansion=src.max_expansion)
                entry["extracted"] = src.key
            manifest[src.key] = entry
        write_json(tmp / "sources.json", manifest)


def downloaded(raw: Path, key: str) -> Path:
    """The single downloaded file of ``key`` (for files used as they are, e.g. lists)."""
    files = sorted(p for p in (raw / "downloads" / key).glob("*") if not p.name.endswith(".part"))
    if len(files) != 1:
        raise UssegError(f"{raw}: expected one downloaded file for {key!r} in {raw / 'downloads' / key}")
    return files[0]
