"""`usseg summary`: one table over every experiment's full metrics, beside the published numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from usseg.artifacts.atomic import atomic_file
from usseg.artifacts.metrics import FULL_NAME, MIOU_DEFINITION, identity, load_full, pct
from usseg.evaluation.intervals import SCORES as CI_SCORES
from usseg.evaluation.matching import MATCHERS
from usseg.evaluation.published import BENCHMARKS, Published, find_published, load_published
from usseg.params import STAND_INS
from usseg.tables import markdown, write_tables

NONE = "none"  # no published counterpart (not a benchmark dataset, or nothing published for the row)
UNKNOWN = "unknown"  # a published counterpart whose source gives no value
MEANINGLESS = "meaningless (stand-ins)"  # a rehearsal's difference to a published figure
SETUP_FIRST = ("image_size", "train_split", "init")
SCORE_COLUMNS = (*(f"{k}_{s}" for k in MATCHERS for s in ("mIoU", "pixel_accuracy", "mean_f1", "mIoU_valid")),
                 "unlabelled")  # fmt: skip
# Beside these: the interval over images of one run (_ci_low, _ci_high) or the std over a seed group (_std).
SPREAD = {
    f"{k}_{s}": (f"{k}_{s}_ci_low", f"{k}_{s}_ci_high", f"{k}_{s}_std") for k in MATCHERS for s in CI_SCORES
}
FIXED = (
    "dataset", "experiment", "method", "backbone", "protocol", "classes", "crf", "split", "images", "headline",
    "seeds", *(c for col in SCORE_COLUMNS for c in (col, *SPREAD.get(col, ()))),
    "published_mIoU", "diff_mIoU", "published_pixel_accuracy", "diff_pixel_accuracy", "published_ref",
)  # fmt: skip


def _published_cells(
    entry: Published | None, ours: dict[str, dict[str, float]], stand_in: bool = False
) -> dict[str, Any]:
    """published_* and diff_* (ours under the entry's matching minus the entry), or none / unknown;
    a rehearsal's row has no difference to show (its scores are of stand-ins)."""
    cells: dict[str, Any] = {}
    for key in ("mIoU", "pixel_accuracy"):
        value = None if entry is None else getattr(entry, key)
        if entry is None or value is None:
            cells[f"published_{key}"] = cells[f"diff_{key}"] = NONE if entry is None else UNKNOWN
        else:
            cells[f"published_{key}"] = value
            cells[f"diff_{key}"] = MEANINGLESS if stand_in else round(ours[entry.matching][key] - value, 2)
    return cells


def _row(
    m: dict[str, Any],
    experiment: str,
    method: str,
    setup: dict[str, Any],
    proto: str,
    p: dict[str, Any],
    published: list[Published],
) -> dict[str, Any]:
    """One experiment under one class protocol: both matchings, and the published figure it compares with."""
    ours = {k: {s: pct(p[k][s]) for s in ("mIoU", "pixel_accuracy")} for k in MATCHERS}
    row: dict[str, Any] = {
        "dataset": m.get("dataset", ""), "experiment": experiment, "method": method,
        "backbone": m.get("backbone", ""), **setup, "protocol": proto, "classes": p["num_classes"],
        "crf": m["crf"], "split": m["split"], "images": m["num_images"], "headline": m["matching"],
        "seeds": m.get("seed", ""), "_group": m.get("seed_group"),
    }  # fmt: skip
    for k in MATCHERS:
        row.update({f"{k}_{s}": ours[k][s] for s in ("mIoU", "pixel_accuracy")})
        row.update({f"{k}_{s}_ci_{end}": pct(p[k][f"{s}_ci"][i]) for s in CI_SCORES if f"{s}_ci" in p[k]
                    for i, end in enumerate(("low", "high"))})  # fmt: skip
        row.update(
            {f"{k}_mean_f1": pct(p[k]["mean_f1"]), f"{k}_mIoU_valid": pct(p[k]["valid_pixels"]["mIoU"])}
        )
    row["unlabelled"] = pct(p["unlabelled_fraction"])
    entry = None
    if row["dataset"] in BENCHMARKS:
        entry = find_published(published, method, row["dataset"], proto, row["backbone"], row["split"])
    stand_in = setup.get("inputs") == STAND_INS
    return {**row, **_published_cells(entry, ours, stand_in), "_entry": entry, "_score": ours[m["matching"]]["mIoU"]}


def _seed_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per seed group and protocol: the mean of its runs' scores, and the sample std (ddof 1)
    of mIoU and pixel accuracy. The runs' own rows stay in the table, each with its interval."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["_group"]:
            groups.setdefault((row["_group"], row["protocol"]), []).append(row)
    out = []
    for (group, _), runs in groups.items():
        if len(runs) < 2:
            continue
        first = runs[0]
        row = {k: v for k, v in first.items() if k not in SCORE_COLUMNS and not k.startswith("_")
               and "_ci_" not in k and not k.startswith(("published_", "diff_"))}  # fmt: skip
        row.update(experiment=group, seeds=", ".join(str(r["seeds"]) for r in runs), _group=None)
        for col in SCORE_COLUMNS:
            values = np.array([r[col] for r in runs], np.float64)
            row[col] = round(float(values.mean()), 2)
            if col in SPREAD:
                row[f"{col}_std"] = round(float(values.std(ddof=1)), 2)
        ours = {k: {s: row[f"{k}_{s}"] for s in CI_SCORES} for k in MATCHERS}
        entry = first["_entry"]
        out.append({**row, **_published_cells(entry, ours, row.get("inputs") == STAND_INS), "_entry": entry,
                    "_score": ours[first["headline"]]["mIoU"]})  # fmt: skip
    return out


def summary_frame(
    metric_files: list[Path], published: list[Published]
) -> tuple[pd.DataFrame, list[Published]]:
    """One row per experiment and class protocol, sorted; and the published entries referenced, in order."""
    rows, setup_keys = [], set()
    for path in metric_files:
        m = load_full(path)
        experiment, method = identity(path, m)
        setup = {k if k not in FIXED else f"setup_{k}": v for k, v in (m.get("setup") or {}).items()}
        setup_keys |= set(setup)
        rows += [
            _row(m, experiment, method, setup, proto, p, published) for proto, p in m["protocols"].items()
        ]
    rows += _seed_rows(rows)
    frame = pd.DataFrame([{**dict.fromkeys(setup_keys, ""), **row} for row in rows])
    frame = frame.assign(_proto=frame["protocol"] != "default").sort_values(
        ["dataset", "_proto", "protocol", "_score", "experiment"], ascending=[True, True, True, False, True],
        kind="stable",
    )  # fmt: skip
    used = list(dict.fromkeys(e for e in frame["_entry"] if e is not None))
    frame["published_ref"] = [f"[{used.index(e) + 1}]" if e is not None else "" for e in frame["_entry"]]
    first = {c: i for i, c in enumerate(SETUP_FIRST)}
    setup_cols = sorted(setup_keys, key=lambda c: (first.get(c, len(first)), c))
    frame = frame.reindex(columns=[*FIXED[:4], *setup_cols, *FIXED[4:]])
    optional = [c for c in ("seeds", *(x for cols in SPREAD.values() for x in cols)) if c in frame]
    empty = [c for c in optional if frame[c].isna().all() or (frame[c].astype(str) == "").all()]
    return frame.drop(columns=empty).reset_index(drop=True), used


def markdown_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The table for reading: ``52.4 [47.1, 58.0]`` (one run's 95 % interval) or ``52.4 ± 1.2``
    (mean ± std over a seed group) in the score's own cell."""
    out = frame.copy()
    for col, (low, high, std) in SPREAD.items():
        cells = out[col].astype(object).map(str)
        if low in out:
            has = out[low].notna()
            cells[has] = [f"{v} [{lo}, {hi}]" for v, lo, hi in zip(out[col][has], out[low][has], out[high][has])]
        if std in out:
            has = out[std].notna()
            cells[has] = [f"{v} ± {sd}" for v, sd in zip(out[col][has], out[std][has])]
        out[col] = cells
    return out.drop(columns=[c for cols in SPREAD.values() for c in cols if c in out])


HEADLINE = ("experiment", "method", "dataset", "backbone", "image size", "CRF", "mIoU [95 %]",
            "pixel accuracy [95 %]", "published mIoU", "difference")  # fmt: skip


def headline_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The table a reader opens on: one row per experiment and protocol, ten columns.

    mIoU and pixel accuracy are under the experiment's headline matching, with their interval
    (or ± std over a seed group); a protocol other than ``default`` is named with the dataset.
    """
    cells = markdown_frame(frame)
    rows = []
    for (_, row), (_, text) in zip(frame.iterrows(), cells.iterrows(), strict=True):
        m = row["headline"]
        dataset = row["dataset"] if row["protocol"] == "default" else f"{row['dataset']} / {row['protocol']}"
        # a trained network that does not use the experiment's ViT says what it started from
        init = str(row.get("init", "") or "")
        backbone = row["backbone"] if not init or init.startswith("frozen") else f"{init} init"
        # a rehearsal's score is of stand-in data: it must not read as a result
        mark = "stand-in: " if row.get("inputs") == STAND_INS else ""
        rows.append(dict(zip(HEADLINE, (
            row["experiment"], row["method"], dataset, backbone, row.get("image_size", ""), row["crf"],
            mark + text[f"{m}_mIoU"], mark + text[f"{m}_pixel_accuracy"], row["published_mIoU"], row["diff_mIoU"],
        ), strict=True)))  # fmt: skip
    return pd.DataFrame(rows, columns=list(HEADLINE))


def _value(v: float | None) -> Any:
    return UNKNOWN if v is None else v


def _references(used: list[Published]) -> list[str]:
    lines = ["", "## Published figures referenced above", ""]
    if not used:
        return [*lines, "None: no row has a published counterpart."]
    for i, e in enumerate(used, 1):
        lines.append(
            f"[{i}] {e.method}, {e.dataset} / {e.protocol}, backbone {e.backbone or 'not stated'}, "
            f"split {e.split or 'not stated'}, {e.matching} matching: mIoU {_value(e.mIoU)}, "
            f"pixel accuracy {_value(e.pixel_accuracy)}, mean F1 {_value(e.mean_f1)}. {e.source}; {e.note}."
        )  # fmt: skip
    return lines


def _anchors(datasets: list[str], published: list[Published]) -> list[str]:
    lines = ["", "## Anchors: published numbers on the benchmarks in this summary", ""]
    present = [d for d in BENCHMARKS if d in datasets]
    if not present:
        return [*lines, "No benchmark dataset in this summary: no anchors to list."]
    for dataset in present:
        entries = [e for e in published if e.dataset == dataset]
        table = pd.DataFrame([{
            "method": e.method, "kind": e.kind, "protocol": e.protocol, "split": e.split or "not stated",
            "backbone": e.backbone or "not stated", "matching": e.matching, "mIoU": _value(e.mIoU),
            "pixel_accuracy": _value(e.pixel_accuracy), "mean_f1": _value(e.mean_f1), "source": e.source,
            "note": e.note,
        } for e in entries])  # fmt: skip
        lines += [f"### {dataset}", "", *markdown(table), ""]
    return lines


def write_summary(
    metric_files: list[Path], out_md: Path, out_csv: Path, published_file: Path | None = None,
    out_headline: Path | None = None,
) -> None:  # fmt: skip
    """results/summary.md (a headline table, then every column, sorted by dataset, protocol, then
    headline mIoU), summary.csv (every column) and, when asked, the headline table as CSV (for
    the report's landing page)."""
    published = load_published(published_file)
    frame, used = summary_frame(metric_files, published)
    others = sorted(set(frame["dataset"]) - set(BENCHMARKS))
    headline = headline_frame(frame)
    if out_headline is not None:
        with atomic_file(out_headline) as fh:
            headline.to_csv(fh, index=False, lineterminator="\n")
    rehearsal = [("**Rehearsal: stand-in archives and seeded random weights (`usseg rehearsal`). Every "
                  "score below is meaningless; it shows only that each job ran.**"), ""]
    preamble = [
        "# Results", "", *(rehearsal if "inputs" in frame and (frame["inputs"] == STAND_INS).any() else []),
        "Scores in %, under each experiment's headline matching (`evaluate.matching`), with their 95 %",
        "interval over images; `published mIoU` is the paper's figure for the same method, dataset,",
        "protocol and backbone, `difference` = ours under that figure's matching minus it (`none`: no",
        "published counterpart). Every column, both matchings and the definitions: [Detail](#detail).", "",
        "## Headline", "", *markdown(headline), "",
        "## Detail", "",
        f"Scores in %, read from each experiment's `eval/{FULL_NAME}`. Both matchings come from the same",
        "confusion matrix, accumulated and matched over the whole split: `hungarian_*` is one-to-one (surplus",
        "clusters unmatched, counted wrong), `majority_*` is many-to-one (each cluster to its most frequent",
        "class; with many clusters it tends to an oracle). `headline` names the experiment's",
        "`evaluate.matching`; rows are sorted by dataset, protocol, then the headline matching's mIoU.", "",
        f"Definition: {MIOU_DEFINITION}. Pixel accuracy = correct / labelled ground-truth pixels.",
        "`*_mIoU_valid` scores only pixels the method labelled; `unlabelled` is the share it left unlabelled.",
        "`images` = images scored (those of the split with ground truth). Setup columns (image size, training",
        "split, initialisation...) are copied from the experiment's `setup`; empty = not recorded.", "",
        "`52.4 [47.1, 58.0]`: the score and its 95 % interval over images (`evaluate.intervals`: the score ±",
        "1.96 x its jackknife standard error, the split's matching and classes held fixed; in the CSV `*_ci_low`,",
        "`*_ci_high`). An experiment listing `seeds` runs once per seed (`{name}-seed{s}`, `seeds` = its seed) and",
        "gets one more row named after it: the mean over its runs (`seeds` lists them), `52.4 ± 1.2` = mean ±",
        "sample std (in the CSV `*_std`). `usseg compare A B` tests a difference with a paired interval.", "",
        "`published_*`: the published figure for the same method, dataset, protocol and backbone (`[n]`: its",
        "source and caveats below); `diff_*` = ours under the figure's matching minus the figure; `unknown` =",
        "the source gives no value; `none` = no published counterpart.",
    ]  # fmt: skip
    if others:
        preamble.append(f"Not benchmarks ({', '.join(BENCHMARKS)}) but demo or sample data: {', '.join(others)}; "
                        "their rows have no published numbers.")  # fmt: skip
    preamble.append("")
    epilogue = [*_references(used), *_anchors(sorted(set(frame["dataset"])), published)]
    write_tables(frame, out_csv, out_md, preamble, epilogue, markdown_frame(frame))
