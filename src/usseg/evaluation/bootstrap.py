"""Bootstrap over images: how much a split-level score moves when the images are resampled.

Each resample draws the split's images with replacement, sums their per-image confusion
matrices (a weighted sum: one matrix product per batch of resamples) and re-runs the
matching and scoring on that sum, exactly as the evaluation does on the whole split. Several
matrix stacks resampled with the same draws give a paired bootstrap (``usseg compare``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from usseg.errors import UssegError
from usseg.evaluation.matching import MATCHERS
from usseg.evaluation.metrics import evaluate_counts

SCORES = ("mIoU", "pixel_accuracy")
BATCH = 128  # resamples summed per matrix product: bounds memory at BATCH x K x C floats


@dataclass(frozen=True)
class Settings:
    """``evaluate.bootstrap``: resamples (0 = off), the generator's seed, the interval's level."""

    resamples: int
    seed: int
    level: float

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, where: str = "params evaluate.bootstrap.") -> Settings:
        params = params or {}
        settings = cls(
            int(params.get("resamples", 0)), int(params.get("seed", 0)), float(params.get("level", 0.95))
        )
        if settings.resamples < 0:
            raise UssegError(f"{where}resamples: {settings.resamples} is negative (0 = no intervals)")
        if not 0 < settings.level < 1:
            raise UssegError(f"{where}level: {settings.level} is not in (0, 1)")
        return settings

    def as_dict(self) -> dict[str, Any]:
        return {"resamples": self.resamples, "seed": self.seed, "level": self.level}


def resampled_sums(stacks: Sequence[np.ndarray], settings: Settings) -> Iterator[list[np.ndarray]]:
    """For each resample, every stack's (images x K x C) matrices summed over the drawn images.

    All stacks share each draw (paired). Sums are exact: float64 holds integers below 2**53.
    """
    n = stacks[0].shape[0]
    if any(s.shape[0] != n for s in stacks):
        raise UssegError(f"paired bootstrap: stacks have {[s.shape[0] for s in stacks]} images, not one count")
    flat = [s.reshape(n, -1).astype(np.float64) for s in stacks]
    rng = np.random.default_rng(settings.seed)
    for start in range(0, settings.resamples, BATCH):
        b = min(BATCH, settings.resamples - start)
        draws = rng.integers(0, n, size=(b, n))
        weights = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        sums = [np.rint(weights @ f).astype(np.int64).reshape(b, *s.shape[1:]) for f, s in zip(flat, stacks)]
        for i in range(b):
            yield [s[i] for s in sums]


def split_scores(counts: np.ndarray) -> dict[str, dict[str, float]]:
    """Headline scores (all pixels) of one split-level confusion matrix under each matching."""
    out = {}
    for m in MATCHERS:
        allp = evaluate_counts(counts, m)["all_pixels"]
        out[m] = {k: allp[k] for k in SCORES}
    return out


def interval(values: np.ndarray, level: float) -> list[float]:
    """The percentile interval holding ``level`` of the resampled values."""
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def score_intervals(per_image: np.ndarray, settings: Settings) -> dict[str, dict[str, list[float]]]:
    """matching -> score -> [low, high] over ``settings.resamples`` resamples of the images."""
    values: dict[str, dict[str, list[float]]] = {m: {k: [] for k in SCORES} for m in MATCHERS}
    for (counts,) in resampled_sums([per_image], settings):
        for m, scores in split_scores(counts).items():
            for k, v in scores.items():
                values[m][k].append(v)
    return {m: {k: interval(np.asarray(v), settings.level) for k, v in per.items()} for m, per in values.items()}


def difference_intervals(
    a: np.ndarray, b: np.ndarray, settings: Settings
) -> dict[str, dict[str, tuple[float, list[float]]]]:
    """matching -> score -> (A minus B on the whole split, paired interval of that difference)."""
    point_a, point_b = split_scores(a.sum(axis=0)), split_scores(b.sum(axis=0))
    diffs: dict[str, dict[str, list[float]]] = {m: {k: [] for k in SCORES} for m in MATCHERS}
    for counts_a, counts_b in resampled_sums([a, b], settings):
        sa, sb = split_scores(counts_a), split_scores(counts_b)
        for m in MATCHERS:
            for k in SCORES:
                diffs[m][k].append(sa[m][k] - sb[m][k])
    return {
        m: {k: (point_a[m][k] - point_b[m][k], interval(np.asarray(diffs[m][k]), settings.level)) for k in SCORES}
        for m in MATCHERS
    }
