"""Safe extraction of tar and zip archives: nothing lands outside the target folder.

Downloaded archives are untrusted input. Every member is checked before anything is
written: absolute names, ``..`` components, links leaving the target and device files
refuse the whole archive. Tar extraction additionally runs with Python's ``data`` filter,
which resolves links against the real destination (catching link chains a per-member
check cannot see). An archive whose members add up to more than ``max_expansion`` times
its own size (a zip bomb) is refused too. Extraction goes to a temp folder beside the
target, renamed when done.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import sys
import tarfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from tqdm import tqdm

from usseg.errors import UssegError

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# Images and label PNGs barely compress; 100x leaves room for text lists and sparse masks.
DEFAULT_MAX_EXPANSION = 100.0


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".zip") or name.endswith(TAR_SUFFIXES)


def _inside(name: str) -> bool:
    """A relative, ``..``-free POSIX path: it stays inside whatever folder it is joined to."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return False
    return ".." not in name.replace("\\", "/").split("/")


def _refuse(archive: Path, member: str, why: str) -> UssegError:
    return UssegError(f"unsafe archive {archive}: member {member!r} {why}; nothing was extracted")


def _check_tar(archive: Path, members: Sequence[tarfile.TarInfo]) -> None:
    for m in members:
        if not _inside(m.name):
            raise _refuse(archive, m.name, "has an absolute path or '..'")
        if m.issym():
            target = posixpath.normpath(posixpath.join(posixpath.dirname(m.name), m.linkname))
            if m.linkname.startswith("/") or not _inside(target):
                raise _refuse(archive, m.name, f"is a symlink to {m.linkname!r}, outside the target folder")
        elif m.islnk():
            if m.linkname.startswith("/") or not _inside(posixpath.normpath(m.linkname)):
                raise _refuse(archive, m.name, f"is a hard link to {m.linkname!r}, outside the target folder")
        elif not (m.isfile() or m.isdir()):
            raise _refuse(archive, m.name, "is a device, FIFO or other special file")


def _check_zip(archive: Path, members: Sequence[zipfile.ZipInfo]) -> None:
    for m in members:
        if not _inside(m.filename):
            raise _refuse(archive, m.filename, "has an absolute path or '..'")
        kind = stat.S_IFMT(m.external_attr >> 16)  # 0 when the archiver recorded no Unix type
        if kind == stat.S_IFLNK:
            raise _refuse(archive, m.filename, "is a symlink (links in zip archives are not supported)")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, m.filename, "is a device, FIFO or other special file")


def _check_size(archive: Path, expanded: int, max_expansion: float) -> None:
    """Refuse before writing when the members' sizes (which bound what is written) are too big."""
    size = archive.stat().st_size
    if expanded > max_expansion * size:
        raise UssegError(
            f"archive {archive} would expand to {expanded} bytes, more than max_expansion "
            f"{max_expansion:g} x its {size} bytes; nothing was extracted (raise the dataset's "
            "`max_expansion` if this archive is trusted)"
        )


def _selected(name: str, include: Sequence[str] | None) -> bool:
    return include is None or any(name.startswith(prefix) for prefix in include)


def _progress(items: Iterable, total: int, archive: Path) -> Iterable:
    return tqdm(items, total=total, unit="file", desc=f"extract {archive.name}", file=sys.stderr)


def safe_extract(
    archive: Path,
    target: Path,
    include: Sequence[str] | None = None,
    max_expansion: float = DEFAULT_MAX_EXPANSION,
) -> Path:
    """Extract ``archive`` into ``target`` (replaced when complete); return ``target``.

    ``include`` limits extraction to members under these path prefixes (e.g. only the
    ``val2017/`` half of a train+val archive); every member is still checked.
    ``max_expansion`` caps the extracted bytes at that multiple of the archive's size.
    """
    archive, target = Path(archive), Path(target)
    tmp = target.with_name(f".{target.name}.extracting")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        if archive.name.lower().endswith(".zip"):
            _extract_zip(archive, tmp, include, max_expansion)
        elif archive.name.lower().endswith(TAR_SUFFIXES):
            _extract_tar(archive, tmp, include, max_expansion)
        else:
            raise UssegError(f"{archive}: not a .zip or .tar archive (by its name)")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def _extract_tar(archive: Path, dest: Path, include: Sequence[str] | None, max_expansion: float) -> None:
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            _check_tar(archive, members)
            chosen = [m for m in members if _selected(m.name, include)]
            _check_size(archive, sum(m.size for m in chosen if m.isfile()), max_expansion)
            for m in _progress(chosen, len(chosen), archive):
                tar.extract(m, dest, filter="data")
    except tarfile.FilterError as exc:
        raise _refuse(archive, exc.tarinfo.name, f"fails tarfile's 'data' filter ({exc})") from None
    except (tarfile.TarError, EOFError) as exc:
        raise UssegError(f"{archive}: not a readable tar archive: {exc}") from exc


def _extract_zip(archive: Path, dest: Path, include: Sequence[str] | None, max_expansion: float) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_zip(archive, members)
            chosen = [m for m in members if _selected(m.filename, include)]
            _check_size(archive, sum(m.file_size for m in chosen), max_expansion)
            for m in _progress(chosen, len(chosen), archive):
                zf.extract(m, dest)
    except (zipfile.BadZipFile, EOFError) as exc:
        raise UssegError(f"{archive}: not a readable zip archive: {exc}") from exc
