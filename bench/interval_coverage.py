"""Which interval over images means 95 %? Coverage of each candidate on a simulated population.

A population of per-image confusion matrices (clusters x classes, as `usseg evaluate` keeps
them) with a known split-level score: clusters are a noisy function of the classes, with an
image-level noise on top, and the classes have a long tail (rare classes, badly segmented).
Splits of n images are drawn from it; for each candidate interval the share of splits whose
interval holds the population's own score (matching fitted on the whole population) is its
coverage. `tests/test_intervals.py` runs this with fixed seeds and asserts the project's
choice; run it directly for the table:

    python bench/interval_coverage.py [--splits 400] [--resamples 400]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

from usseg.evaluation.intervals import (
    FixedScorer,
    Settings,
    difference_intervals,
    jackknife_se,
    leave_one_out_scores,
    score_intervals,
    split_scores,
)

CLASSES = 15
POPULATION = 20_000
LEVEL = 0.95


@dataclass(frozen=True)
class Population:
    """Per-image confusion stacks (images x (clusters + unlabelled) x classes) of two methods
    on the same images: ``a`` segments better than ``b``."""

    a: np.ndarray
    b: np.ndarray


def _method(rng: np.random.Generator, present: np.ndarray, pixels: np.ndarray, accuracy: np.ndarray,
            concentration: float) -> np.ndarray:  # fmt: skip
    """Counts (images x clusters + 1 x classes): class c's pixels go to cluster c with an
    image-level probability around ``accuracy[c]``, the rest to two confusable clusters and
    the unlabelled row."""
    n, c = present.shape
    out = np.zeros((n, c + 1, c), np.int64)
    for cls in range(c):
        rows = np.flatnonzero(present[:, cls])
        if not rows.size:
            continue
        others = [(cls + 1) % c, (cls + 5) % c]
        mean = np.zeros(c + 1)
        mean[cls] = accuracy[cls]
        mean[others] = (1 - accuracy[cls]) * 0.45
        mean[c] = (1 - accuracy[cls]) * 0.10
        probs = rng.dirichlet(concentration * mean + 1e-3, size=rows.size)
        for row, p in zip(rows, probs, strict=True):
            out[row, :, cls] = rng.multinomial(pixels[row, cls], p)
    return out


def population(seed: int = 0, images: int = POPULATION, classes: int = CLASSES) -> Population:
    """Images hold 1-4 classes drawn with a long-tailed frequency; rarer classes are segmented worse."""
    rng = np.random.default_rng(seed)
    frequency = 1.0 / np.arange(1, classes + 1) ** 1.2
    present = np.zeros((images, classes), bool)
    present[:, 0] = rng.random(images) < 0.9  # a common background-like class
    for i in range(images):
        k = rng.integers(1, 4)
        present[i, rng.choice(np.arange(1, classes), size=k, replace=False,
                              p=frequency[1:] / frequency[1:].sum())] = True  # fmt: skip
    present[present.sum(axis=1) == 0, 0] = True
    pixels = np.rint(rng.lognormal(7.0, 0.8, size=(images, classes))).astype(np.int64) * present
    accuracy = np.linspace(0.75, 0.25, classes)
    return Population(_method(rng, present, pixels, accuracy, 8.0),
                      _method(rng, present, pixels, accuracy - 0.1, 8.0))


# --- the candidates: each maps (per-image stack, resamples, seed) -> (point, values) ---
def _resampled(stack: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap resamples of the images: each the sum of n images drawn with replacement."""
    n = stack.shape[0]
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    weights = np.stack([np.bincount(d, minlength=n) for d in draws]).astype(np.float64)
    return (weights @ stack.reshape(n, -1).astype(np.float64)).reshape(resamples, *stack.shape[1:])


def _point(stack: np.ndarray) -> float:
    return split_scores(stack.sum(axis=0))["hungarian"]["mIoU"]


def jackknife_values(stack: np.ndarray, resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """Leave-one-out values under the split's matching and class set (``resamples`` unused)."""
    return _point(stack), leave_one_out_scores(stack)["hungarian"]["mIoU"]


def refit_values(stack: np.ndarray, resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """Each resample scored under its own matching and the classes it holds (the old way)."""
    sums = _resampled(stack, resamples, seed)
    return _point(stack), np.array([FixedScorer(s, "hungarian")(s[None])["mIoU"][0] for s in sums])


def fixed_values(stack: np.ndarray, resamples: int, seed: int) -> tuple[float, np.ndarray]:
    """Matching and class set fixed at the split's own (what the split's score used)."""
    scorer = FixedScorer(stack.sum(axis=0), "hungarian")
    return _point(stack), scorer(_resampled(stack, resamples, seed))["mIoU"]


def percentile(point: float, values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def basic(point: float, values: np.ndarray) -> tuple[float, float]:
    low, high = percentile(point, values)
    return 2 * point - high, 2 * point - low


def normal(point: float, values: np.ndarray) -> tuple[float, float]:
    half = norm.ppf((1 + LEVEL) / 2) * values.std(ddof=1)
    return point - half, point + half


def normal_jackknife(point: float, values: np.ndarray) -> tuple[float, float]:
    half = norm.ppf((1 + LEVEL) / 2) * jackknife_se(values)
    return point - half, point + half


CANDIDATES: dict[str, tuple[Callable[..., tuple[float, np.ndarray]], Callable[..., tuple[float, float]]]] = {
    "percentile, refit matching, classes of each resample (before)": (refit_values, percentile),
    "basic, refit matching": (refit_values, basic),
    "normal, refit matching": (refit_values, normal),
    "percentile, fixed matching and class set": (fixed_values, percentile),
    "basic, fixed matching and class set": (fixed_values, basic),
    "normal, fixed matching and class set": (fixed_values, normal),
    "normal, jackknife se, fixed matching and class set (the project's)": (jackknife_values, normal_jackknife),
}


def _draws(pop_size: int, n: int, splits: int, seed: int) -> np.ndarray:
    """Row indices of ``splits`` splits of ``n`` distinct images."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.choice(pop_size, size=n, replace=False) for _ in range(splits)])


@dataclass(frozen=True)
class Coverage:
    covered: float  # share of splits whose interval holds the population score
    holds_point: float  # share whose interval holds its own point estimate
    width: float  # median width, in points


def coverage(stack: np.ndarray, n: int, splits: int, resamples: int, seed: int = 1,
             names: list[str] | None = None) -> dict[str, Coverage]:  # fmt: skip
    """Coverage of each candidate on ``splits`` splits of ``n`` images of ``stack``."""
    target = split_scores(stack.sum(axis=0))["hungarian"]["mIoU"]
    names = names or list(CANDIDATES)
    hits = {name: [] for name in names}
    cache: dict[Callable[..., tuple[float, np.ndarray]], tuple[float, np.ndarray]] = {}
    for i, rows in enumerate(_draws(len(stack), n, splits, seed)):
        cache.clear()
        for name in names:
            values_of, interval_of = CANDIDATES[name]
            if values_of not in cache:
                cache[values_of] = values_of(stack[rows], resamples, seed + i)
            point, values = cache[values_of]
            low, high = interval_of(point, values)
            hits[name].append((low <= target <= high, low <= point <= high, high - low))
    return {name: Coverage(*(float(np.mean(col)) for col in zip(*h, strict=True))) for name, h in hits.items()}


def project_coverage(stack: np.ndarray, n: int, splits: int, seed: int = 1) -> Coverage:
    """The same, through the project's own `score_intervals` (what `usseg evaluate` reports)."""
    target = split_scores(stack.sum(axis=0))["hungarian"]["mIoU"]
    out = []
    for i, rows in enumerate(_draws(len(stack), n, splits, seed)):
        sample = stack[rows]
        point = split_scores(sample.sum(axis=0))["hungarian"]["mIoU"]
        low, high = score_intervals(sample, Settings("jackknife", LEVEL))["hungarian"]["mIoU"]
        out.append((low <= target <= high, low <= point <= high, high - low))
    return Coverage(*(float(np.mean(col)) for col in zip(*out, strict=True)))


def difference_coverage(pop: Population, n: int, splits: int, seed: int = 1) -> Coverage:
    """Coverage of `usseg compare`'s paired interval of A - B (mIoU) over the population's difference."""
    target = (split_scores(pop.a.sum(axis=0))["hungarian"]["mIoU"]
              - split_scores(pop.b.sum(axis=0))["hungarian"]["mIoU"])  # fmt: skip
    out = []
    for i, rows in enumerate(_draws(len(pop.a), n, splits, seed)):
        point, (low, high) = difference_intervals(pop.a[rows], pop.b[rows], Settings("jackknife", LEVEL))[
            "hungarian"]["mIoU"]  # fmt: skip
        out.append((low <= target <= high, low <= point <= high, high - low))
    return Coverage(*(float(np.mean(col)) for col in zip(*out, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=400, help="splits drawn per n")
    parser.add_argument("--resamples", type=int, default=400, help="resamples per split of the bootstrap candidates")
    parser.add_argument("--n", type=int, nargs="+", default=[15, 100, 1000])
    args = parser.parse_args()
    began = time.perf_counter()
    pop = population()
    target = split_scores(pop.a.sum(axis=0))["hungarian"]["mIoU"]
    print(f"population: {POPULATION} images, {CLASSES} classes, Hungarian mIoU {100 * target:.2f} "
          f"(B: {100 * split_scores(pop.b.sum(axis=0))['hungarian']['mIoU']:.2f}); "
          f"{args.splits} splits per n, {args.resamples} resamples each, {LEVEL:.0%} intervals")  # fmt: skip
    print("\n| interval | " + " | ".join(f"n = {n}: coverage / holds point / width" for n in args.n) + " |")
    print("|---|" + "---|" * len(args.n))
    table = {n: coverage(pop.a, n, args.splits, args.resamples) for n in args.n}
    table_project = {n: project_coverage(pop.a, n, args.splits) for n in args.n}
    table_diff = {n: difference_coverage(pop, n, args.splits) for n in args.n}

    def cells(cov: dict[int, Coverage]) -> str:
        return " | ".join(f"{c.covered:.1%} / {c.holds_point:.0%} / {100 * c.width:.1f}" for c in cov.values())

    for name in CANDIDATES:
        print(f"| {name} | {cells({n: table[n][name] for n in args.n})} |")
    print(f"| the project's `score_intervals` (`usseg evaluate`) | {cells(table_project)} |")
    print(f"| the project's `difference_intervals` (`usseg compare`, A - B) | {cells(table_diff)} |")
    print(f"\n{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
