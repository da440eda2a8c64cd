"""Result tables written twice over: CSV for tools, Markdown for people."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from usseg.atomic import atomic_file


def write_tables(
    rows: Sequence[dict[str, Any]], fields: Sequence[str], out_csv: Path, out_md: Path, preamble: Sequence[str]
) -> None:
    """Write ``rows`` as CSV and as a Markdown table under ``preamble`` lines, each atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields))
    writer.writeheader()
    writer.writerows(rows)
    with atomic_file(out_csv) as fh:
        fh.write(buf.getvalue())
    lines = [*preamble, "| " + " | ".join(fields) + " |", "|" + "---|" * len(fields)]
    lines += ["| " + " | ".join(str(r[f]) for f in fields) + " |" for r in rows]
    with atomic_file(out_md) as fh:
        fh.write("\n".join(lines) + "\n")
