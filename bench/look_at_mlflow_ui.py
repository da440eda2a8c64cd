"""What a person sees in `mlflow ui` after a run: headless Chromium on the runs table.

Serves the workflow's store with `mlflow ui` on 127.0.0.1 (a free port), opens the page
`usseg runs-url` prints, saves a screenshot and checks the page: the runs table (not
MLflow 3's GenAI overview), one row per experiment, mIoU and pixel accuracy as columns.
Needs Debian's `chromium`. From the workflow root, after `snakemake`:

    python bench/look_at_mlflow_ui.py [--out mlflow-runs.png]
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(url: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"mlflow ui did not answer at {url} within {seconds:.0f} s")


def chromium(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1600,800",
                               "--virtual-time-budget=20000", *args, url],
                              capture_output=True, text=True, timeout=180, check=False)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="results/mlflow.db", help="the SQLite store (default results/mlflow.db)")
    parser.add_argument("--experiment", default="usseg", help="MLflow experiment of the parent runs")
    parser.add_argument("--out", default="mlflow-runs.png", help="where the screenshot goes")
    args = parser.parse_args()
    if shutil.which("chromium") is None:
        print("chromium is not installed (apt-get install -y chromium)", file=sys.stderr)
        return 2
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    ui = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "ui", "--backend-store-uri",
                           f"sqlite:///{args.store}", "--host", "127.0.0.1", "--port", str(port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_up(base)
        url = subprocess.run([str(Path(sys.executable).parent / "usseg"), "runs-url", "--experiment",
                              args.experiment, "--base", base], capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        chromium(url, f"--screenshot={args.out}")
        dom = chromium(url, "--dump-dom").stdout
    finally:
        ui.terminate()
        ui.wait(timeout=30)
    text = re.sub(r"<[^>]+>", " ", dom)
    matching = re.search(r"(\d+)\s+matching runs?", text)
    checks = {
        "runs table, not the GenAI overview": "matching run" in text and "No data available" not in text,
        "mIoU column": ">mIoU<" in dom,
        "pixel_accuracy column": ">pixel_accuracy<" in dom,
        "filtered to one row per experiment": "usseg.current" in dom,
    }
    print(f"page: {url.replace(base, 'http://127.0.0.1:PORT')}")
    print(f"screenshot: {args.out}")
    print(f"rows: {matching.group(1) if matching else '?'} matching runs")
    for what, ok in checks.items():
        print(f"  {'ok     ' if ok else 'MISSING'} {what}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
