"""Safe extraction: malicious tar/zip members are refused and nothing lands outside."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from usseg.datasets.archive import safe_extract
from usseg.errors import UssegError


def _tar(path: Path, members: list[tarfile.TarInfo | tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for m in members:
            if isinstance(m, tuple):
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
            else:
                tar.addfile(m)
    return path


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _assert_refused(archive: Path, tmp_path: Path, match: str) -> None:
    target = tmp_path / "out" / "tree"
    with pytest.raises(UssegError, match=match) as err:
        safe_extract(archive, target)
    assert str(archive) in str(err.value)
    assert not target.exists()
    assert not any((tmp_path / "out").iterdir()), "the temp extraction folder was left behind"
    assert not (tmp_path / "evil").exists()


def test_good_tar_extracts_and_replaces_target(tmp_path: Path) -> None:
    archive = _tar(
        tmp_path / "a.tar", [("top/a.txt", b"hello"), ("top/sub/b.txt", b"x"), _link("top/l", "a.txt")]
    )
    target = tmp_path / "out" / "tree"
    target.mkdir(parents=True)
    (target / "stale.txt").write_text("old")
    safe_extract(archive, target)
    assert (target / "top" / "a.txt").read_bytes() == b"hello"
    assert (target / "top" / "l").read_bytes() == b"hello"
    assert not (target / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["tree"]


def test_include_limits_extraction(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "a.tar", [("train2017/1.png", b"1"), ("val2017/2.png", b"2")])
    target = safe_extract(archive, tmp_path / "t", include=["val2017/"])
    assert [p.relative_to(target).as_posix() for p in target.rglob("*.png")] == ["val2017/2.png"]


@pytest.mark.parametrize(
    ("member", "match"),
    [
        (("../evil", b"x"), "absolute path or '..'"),
        (("top/../../evil", b"x"), "absolute path or '..'"),
        (("/tmp/evil-abs", b"x"), "absolute path or '..'"),
        (_link("top/link", "../../evil"), "symlink"),
        (_link("top/abs", "/etc/passwd"), "symlink"),
        (_link("top/hard", "../evil", tarfile.LNKTYPE), "hard link"),
    ],
)
def test_malicious_tar_members_refused(tmp_path: Path, member: object, match: str) -> None:
    archive = _tar(tmp_path / "bad.tar", [("top/ok.txt", b"fine"), member])  # type: ignore[list-item]
    _assert_refused(archive, tmp_path, match)


def test_device_file_refused(tmp_path: Path) -> None:
    dev = tarfile.TarInfo("top/dev")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    _assert_refused(_tar(tmp_path / "dev.tar", [dev]), tmp_path, "device")


def test_symlink_chain_escaping_refused(tmp_path: Path) -> None:
    """``d -> .`` then ``d/x -> ..`` looks inside per member but points outside once linked."""
    archive = _tar(tmp_path / "chain.tar", [_link("d", "."), _link("d/x", "..")])
    _assert_refused(archive, tmp_path, "unsafe archive")


def test_malicious_zip_members_refused(tmp_path: Path) -> None:
    for name, match in [
        ("../evil", "absolute path"),
        ("/evil-abs", "absolute path"),
        ("a\\..\\..\\evil", "'..'"),
    ]:
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr("ok.txt", "fine")
            zf.writestr(zipfile.ZipInfo(name), "x")
        _assert_refused(archive, tmp_path, match)


def test_zip_symlink_refused(tmp_path: Path) -> None:
    archive = tmp_path / "link.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("top/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "../../evil")
    _assert_refused(archive, tmp_path, "symlink")


def test_corrupt_archive_is_a_clear_error(tmp_path: Path) -> None:
    archive = tmp_path / "broken.zip"
    archive.write_bytes(b"not a zip at all")
    _assert_refused(archive, tmp_path, "not a readable zip")


def _bomb(path: Path) -> Path:
    """A zip of 4 MiB of zeros: a few kB on disk, far past 100 x its size once extracted."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/ok.txt", "fine")
        zf.writestr("top/zeros.bin", bytes(4 << 20))
    return path


def test_zip_bomb_refused_naming_archive_and_sizes(tmp_path: Path) -> None:
    archive = _bomb(tmp_path / "bomb.zip")
    size = archive.stat().st_size
    expected = rf"would expand to {(4 << 20) + 4} bytes, more than max_expansion 100 x its {size} bytes"
    _assert_refused(archive, tmp_path, expected)


def test_tar_bomb_refused_and_limit_configurable(tmp_path: Path) -> None:
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("top/zeros.bin")
        info.size = 4 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    size = archive.stat().st_size
    expected = rf"would expand to {4 << 20} bytes, more than max_expansion 100 x its {size} bytes"
    _assert_refused(archive, tmp_path, expected)
    target = safe_extract(archive, tmp_path / "out" / "tree", max_expansion=(4 << 20) / size)
    assert (target / "top" / "zeros.bin").stat().st_size == 4 << 20
