"""The evaluate step's parameters, typed (the schema, evaluate.schema.yaml, has checked them)."""

from __future__ import annotations

from dataclasses import dataclass

from usseg.evaluation.intervals import Settings


@dataclass(frozen=True)
class EvaluateParams:
    """`usseg evaluate`: the headline's matching, the intervals, the extra class protocols."""

    matching: str  # hungarian | majority: the headline (both are always scored)
    intervals: Settings
    protocols: tuple[str, ...] | None = None  # None: every protocol the dataset defines
