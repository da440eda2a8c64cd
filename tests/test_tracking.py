"""The MLflow audit trail: digests, run status, the current-run mark, parent metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from usseg.tracking.digest import digest_path


def test_snakemake_marker_does_not_change_a_folder_digest(tmp_path: Path) -> None:
    folder = tmp_path / "prepared"
    folder.mkdir()
    (folder / "meta.json").write_text("{}")
    (folder / "labels").mkdir()
    (folder / "labels" / "a.png").write_bytes(b"\x89PNG")
    before = digest_path(folder)
    (folder / ".snakemake_timestamp").write_text("")
    assert digest_path(folder) == before
    (folder / "labels" / "a.png").write_bytes(b"\x89PNG!")
    assert digest_path(folder) != before
