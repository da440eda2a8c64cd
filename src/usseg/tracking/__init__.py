"""MLflow audit trail: a parent run per experiment, a nested run per job, digests of inputs."""

from usseg.tracking.digest import digest_path
from usseg.tracking.runs import job_run, log_figure, log_input, log_metrics

__all__ = ["digest_path", "job_run", "log_figure", "log_input", "log_metrics"]
