"""Result tables written twice over: CSV for tools, Markdown for people (both from one DataFrame)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from usseg.artifacts.atomic import atomic_file


def markdown(frame: pd.DataFrame) -> list[str]:
    """``frame`` as Markdown table lines (missing values as empty cells)."""
    cells = frame.astype(object).where(frame.notna(), "")
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in cells.itertuples(index=False)]
    return lines


def write_tables(
    frame: pd.DataFrame,
    out_csv: Path,
    out_md: Path,
    preamble: Sequence[str],
    epilogue: Sequence[str] = (),
    md_frame: pd.DataFrame | None = None,
) -> None:
    """Write ``frame`` as CSV, and as Markdown between ``preamble`` and ``epilogue`` lines, each atomically.

    ``md_frame``: the Markdown's own version of the table (e.g. cells merged for reading), else ``frame``.
    """
    with atomic_file(out_csv) as fh:
        frame.to_csv(fh, index=False, lineterminator="\n")
    with atomic_file(out_md) as fh:
        fh.write("\n".join([*preamble, *markdown(frame if md_frame is None else md_frame), *epilogue]) + "\n")
