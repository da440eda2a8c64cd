"""Download, verify, resume: a file is trusted only after its checksum matched."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from usseg.datasets import suim
from usseg.datasets.download import download_sources, downloaded, parse_checksum, source
from usseg.datasets.params import BenchmarkParams, FileSpec
from usseg.errors import UssegError
from usseg.job_args import build_typed

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, so a download spans several chunks


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves files with Range support; ``server.cut`` truncates the next response."""

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        self.server.ranges.append(self.headers.get("Range"))  # type: ignore[attr-defined]
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        if start >= len(data) and start:
            self.send_response(416)
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.cut:  # type: ignore[attr-defined]
            body, self.server.cut = body[: self.server.cut], 0  # type: ignore[attr-defined]
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Any]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Handler, directory=str(root))
    )
    httpd.ranges, httpd.cut, httpd.root = [], 0, root  # type: ignore[attr-defined]
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    thread.join()


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _params(**spec: Any) -> dict[str, Any]:
    return {"split": "val", "archives": {"blob": spec}}


def _fetch(raw: Path, params: dict[str, Any]) -> Path:
    download_sources(raw, [source("demo", "blob", build_typed(BenchmarkParams, params))])
    return downloaded(raw, "blob")


def test_file_url_download_verified_and_recorded(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(PAYLOAD)
    md5 = "md5:" + hashlib.md5(PAYLOAD).hexdigest()
    raw = tmp_path / "raw"
    got = _fetch(raw, _params(url=src.as_uri(), checksum=md5))
    assert got.read_bytes() == PAYLOAD
    assert not (tmp_path / "raw.partial").exists()
    manifest = json.loads((raw / "sources.json").read_text())
    assert manifest["blob"]["checksum"] == md5 and manifest["blob"]["from"] == src.as_uri()


def test_archive_is_extracted_beside_the_download(tmp_path: Path) -> None:
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("inner/a.txt", "A")
    raw = tmp_path / "raw"
    _fetch(raw, _params(url=archive.as_uri(), checksum=_sha256(archive.read_bytes())))
    assert (raw / "blob" / "inner" / "a.txt").read_text() == "A"


def test_checksum_mismatch_names_file_and_digests_and_removes_it(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(PAYLOAD)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(UssegError) as err:
        _fetch(tmp_path / "raw", _params(url=src.as_uri(), checksum=wrong))
    msg = str(err.value)
    assert "blob.bin" in msg and wrong in msg and _sha256(PAYLOAD) in msg
    assert not (tmp_path / "raw").exists()
    leftovers = [p for p in (tmp_path / "raw.partial").rglob("*") if p.is_file()]
    assert leftovers == [], "a file that failed verification was kept"


def test_user_path_is_verified_and_never_deleted(tmp_path: Path) -> None:
    local = tmp_path / "mine.bin"
    local.write_bytes(PAYLOAD)
    with pytest.raises(UssegError, match="checksum mismatch for .*mine.bin"):
        _fetch(tmp_path / "raw", _params(path=str(local), checksum="md5:" + "1" * 32))
    assert local.read_bytes() == PAYLOAD
    got = _fetch(
        tmp_path / "raw", _params(path=str(local), url="http://127.0.0.1:9/never", checksum=_sha256(PAYLOAD))
    )
    assert got.read_bytes() == PAYLOAD


def test_mirror_used_when_url_fails(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(PAYLOAD)
    gone = (tmp_path / "gone.bin").as_uri()
    params = _params(url=gone, mirror=src.as_uri(), checksum=_sha256(PAYLOAD), filename="blob.bin")
    got = _fetch(tmp_path / "raw", params)
    assert got.name == "blob.bin" and got.read_bytes() == PAYLOAD


def test_interrupted_download_is_not_trusted_and_resumes(tmp_path: Path, server: Any) -> None:
    (server.root / "blob.bin").write_bytes(PAYLOAD)
    params = _params(url=f"{server.url}/blob.bin", checksum=_sha256(PAYLOAD))
    server.cut = 300_000  # the connection drops after 300 kB
    with pytest.raises(UssegError, match="stopped at 300000 of 1048576 bytes; run again to resume"):
        _fetch(tmp_path / "raw", params)
    assert not (tmp_path / "raw").exists()
    part = tmp_path / "raw.partial" / "downloads" / "blob" / "blob.bin.part"
    assert part.is_file() and 0 < part.stat().st_size < len(PAYLOAD)
    assert not (part.parent / "blob.bin").exists()
    offset = part.stat().st_size
    assert _fetch(tmp_path / "raw", params).read_bytes() == PAYLOAD
    assert server.ranges[-1] == f"bytes={offset}-", "the second run did not resume"


def test_corrupt_partial_file_fails_verification_then_recovers(tmp_path: Path, server: Any) -> None:
    (server.root / "blob.bin").write_bytes(PAYLOAD)
    params = _params(url=f"{server.url}/blob.bin", checksum=_sha256(PAYLOAD))
    part = tmp_path / "raw.partial" / "downloads" / "blob" / "blob.bin.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"garbage from an earlier, broken transfer")
    with pytest.raises(UssegError, match="checksum mismatch"):
        _fetch(tmp_path / "raw", params)
    assert not part.exists()
    assert _fetch(tmp_path / "raw", params).read_bytes() == PAYLOAD


def test_unpinned_checksum_reports_digest_and_keeps_bytes_for_resume(tmp_path: Path, server: Any) -> None:
    (server.root / "blob.bin").write_bytes(PAYLOAD)
    params = _params(url=f"{server.url}/blob.bin", checksum=None)
    with pytest.raises(UssegError) as err:
        _fetch(tmp_path / "raw", params)
    assert "data.datasets.demo.archives.blob.checksum is not set" in str(err.value)
    assert _sha256(PAYLOAD) in str(err.value)
    params["archives"]["blob"]["checksum"] = _sha256(PAYLOAD)
    assert _fetch(tmp_path / "raw", params).read_bytes() == PAYLOAD
    assert server.ranges[-1] == f"bytes={len(PAYLOAD)}-", "the pinned rerun downloaded again"


def test_suim_without_a_source_says_which_file_where_and_checksum(tmp_path: Path) -> None:
    params = {
        "split": "test",
        "archives": {
            "test": {"url": None, "mirror": None, "path": None, "checksum": None, "filename": "TEST.zip"}
        },
    }
    with pytest.raises(UssegError) as err:
        suim.download(tmp_path / "raw", build_typed(suim.PARAMS, params))
    msg = str(err.value)
    assert "TEST.zip" in msg
    assert "irvlab.cs.umn.edu/resources/suim-dataset" in msg
    assert "data.datasets.suim.archives.test.path" in msg
    assert "knows no checksum" in msg


@pytest.mark.parametrize("text", ["md5:abc", "sha1:" + "0" * 40, "sha256:" + "g" * 64, "0" * 32])
def test_bad_checksum_format_rejected(text: str) -> None:
    with pytest.raises(UssegError, match="checksum"):
        parse_checksum(text, "data.datasets.x.archives.y")


def test_checksum_parsing_accepts_both_algorithms() -> None:
    assert parse_checksum("MD5:" + "A" * 32, "w") == ("md5", "a" * 32)
    assert parse_checksum("sha256:" + "b" * 64, "w") == ("sha256", "b" * 64)


@pytest.mark.parametrize("bad", ["md5:abc", "sha1:" + "0" * 40, "sha256:" + "g" * 64, ""])
def test_bad_checksum_stops_before_any_byte_is_fetched(tmp_path: Path, server: Any, bad: str) -> None:
    (server.root / "blob.bin").write_bytes(PAYLOAD)
    with pytest.raises(UssegError) as err:
        _fetch(tmp_path / "raw", _params(url=f"{server.url}/blob.bin", checksum=bad))
    assert f"data.datasets.demo.archives.blob.checksum: {bad!r} is not" in str(err.value)
    assert server.ranges == [], "the file was requested before its checksum was checked"
    assert not (tmp_path / "raw.partial").exists() and not (tmp_path / "raw").exists()


def test_max_expansion_param_reaches_extraction(tmp_path: Path) -> None:
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("inner/zeros.bin", bytes(1 << 20))
    params = _params(url=archive.as_uri(), checksum=_sha256(archive.read_bytes()))
    expected = f"{archive.name} would expand to {1 << 20} bytes, more than max_expansion 100 x"
    with pytest.raises(UssegError, match=expected):
        _fetch(tmp_path / "raw", params)
    assert not (tmp_path / "raw.partial" / ".blob.extracting").exists()
    assert not (tmp_path / "raw.partial" / "blob").exists()
    params["max_expansion"] = 2000
    _fetch(tmp_path / "raw", params)
    assert (tmp_path / "raw" / "blob" / "inner" / "zeros.bin").stat().st_size == 1 << 20


def test_checkpoint_is_fetched_verified_and_an_unpinned_one_names_its_key(tmp_path: Path) -> None:
    from usseg.backbones.fetch import fetch_checkpoint

    release = tmp_path / "dino_resnet50_pretrain.pth"
    release.write_bytes(b"weights")
    out = tmp_path / "data" / "checkpoints" / "dino_resnet50.pth"
    out.parent.mkdir(parents=True)
    spec = {"url": release.as_uri(), "checksum": _sha256(b"weights")}
    assert fetch_checkpoint("dino_resnet50", out, FileSpec(**spec)).read_bytes() == b"weights"
    out.unlink()
    with pytest.raises(UssegError) as info:
        fetch_checkpoint("dino_resnet50", out, FileSpec(url=release.as_uri(), checksum=None))
    assert str(info.value).startswith("checkpoints.dino_resnet50.checksum is not set")
    assert _sha256(b"weights") in str(info.value) and not out.exists()
