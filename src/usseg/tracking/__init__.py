"""MLflow audit trail: a parent run per experiment, a nested run per job, digests of inputs and outputs."""

from usseg.artifacts.digest import digest_path
from usseg.tracking.runs import (
    job_run,
    log_experiment_metrics,
    log_figure,
    log_input,
    log_metrics,
    log_output,
)

__all__ = [
    "digest_path",
    "job_run",
    "log_experiment_metrics",
    "log_figure",
    "log_input",
    "log_metrics",
    "log_output",
]
