"""`usseg compare A B`: is A's score different from B's beyond the noise of which images were drawn?

A paired interval over images (`usseg.evaluation.intervals`): the jackknife leaves the same
image out of both experiments, so what the two share (hard images, easy images) cancels in
the difference.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from usseg.errors import UssegError
from usseg.evaluation.confusion import PER_IMAGE_NAME, load_per_image
from usseg.evaluation.intervals import Settings, difference_intervals


def eval_folder(name: str, results: Path) -> Path:
    """An evaluate report folder, given as a path or as an experiment name under ``results``."""
    path = Path(name)
    if (path / PER_IMAGE_NAME).is_file():
        return path
    found = sorted(p for p in results.glob(f"*/{name}/eval") if p.is_dir())
    if len(found) == 1:
        return found[0]
    if not found:
        raise UssegError(f"{name!r}: neither an eval folder with {PER_IMAGE_NAME} nor an experiment under {results}"
                         f" (no {results}/*/{name}/eval); re-run its evaluation if it predates {PER_IMAGE_NAME}")
    raise UssegError(f"{name!r}: several experiments of that name under {results}: {[str(p) for p in found]}")


def compare(a: Path, b: Path, settings: Settings) -> list[dict[str, Any]]:
    """One row per protocol both evaluations scored, matching and score: A - B and its paired interval.

    Refuses when the two were not scored on the same images of the same dataset and split.
    """
    ids_a, dataset_a, split_a, stacks_a = load_per_image(a / PER_IMAGE_NAME)
    ids_b, dataset_b, split_b, stacks_b = load_per_image(b / PER_IMAGE_NAME)
    if (dataset_a, split_a) != (dataset_b, split_b):
        raise UssegError(f"cannot compare {a} (dataset {dataset_a!r}, split {split_a!r}) with {b} "
                         f"(dataset {dataset_b!r}, split {split_b!r}): not the same images")
    if ids_a != ids_b:
        only_a, only_b = sorted(set(ids_a) - set(ids_b)), sorted(set(ids_b) - set(ids_a))
        raise UssegError(f"cannot compare {a} ({len(ids_a)} images) with {b} ({len(ids_b)} images): the image ids "
                         f"differ (only in A: {only_a[:5]}, only in B: {only_b[:5]}"
                         f"{', same ids in another order' if not only_a and not only_b else ''})")
    rows = []
    for protocol in [p for p in stacks_a if p in stacks_b]:
        if stacks_a[protocol].shape[2] != stacks_b[protocol].shape[2]:
            raise UssegError(f"cannot compare {a} with {b}: protocol {protocol!r} has "
                             f"{stacks_a[protocol].shape[2]} vs {stacks_b[protocol].shape[2]} classes")
        for matching, scores in difference_intervals(stacks_a[protocol], stacks_b[protocol], settings).items():
            for score, (diff, (low, high)) in scores.items():
                rows.append({"protocol": protocol, "matching": matching, "score": score, "difference": diff,
                             "ci_low": low, "ci_high": high, "beyond_noise": bool(low > 0 or high < 0)})
    return rows


def format_rows(rows: list[dict[str, Any]], a: str, b: str, settings: Settings) -> list[str]:
    """Human-readable lines, differences in percentage points."""
    lines = [f"A = {a}, B = {b}: A - B in points, {settings.level:.0%} paired interval over images "
             f"({settings.method}: the split's score ± z x its standard error, each image left out of both)"]
    for r in rows:
        verdict = "beyond the noise" if r["beyond_noise"] else "within the noise"
        diff, low, high = (100 * r[k] + 0.0 for k in ("difference", "ci_low", "ci_high"))  # + 0.0: no "-0.00"
        lines.append(f"  {r['protocol']:<10} {r['matching']:<9} {r['score']:<14} {diff:+7.2f} "
                     f"[{low:+.2f}, {high:+.2f}]  {verdict}")
    return lines


def _compare(args: argparse.Namespace) -> None:
    settings = Settings.from_params({"method": "jackknife", "level": args.level}, where="usseg compare --")
    a, b = eval_folder(args.a, Path(args.results)), eval_folder(args.b, Path(args.results))
    print("\n".join(format_rows(compare(a, b, settings), str(a), str(b), settings)))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="paired interval over images of the score difference of two experiments")
    p.add_argument("a", help="experiment name or its eval folder (results/{method}/{exp}/eval)")
    p.add_argument("b", help="the experiment to subtract")
    p.add_argument("--results", default="results", help="folder searched for experiment names (default results)")
    p.add_argument("--level", type=float, default=0.95, help="confidence level of the interval")
    p.set_defaults(func=_compare)
