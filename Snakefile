# usseg: images -> ViT features (Zarr) -> method -> refine (upsample + CRF) -> evaluation.
# Every experiment of params.yaml's `experiments` list is a branch of this DAG;
# `snakemake --config preset=NAME` swaps in another preset.
import os
import sys

from snakemake.utils import min_version

from usseg.errors import UssegError
from usseg.params import param_sources

min_version("9.0")

# params.yaml, each --configfile, then --config, in Snakemake's merge order; read strictly
# first, so a duplicate key or a YAML syntax error names its file, line and column.
try:
    PARAM_SOURCES = param_sources("params.yaml", workflow.config_settings)
except UssegError as exc:
    sys.exit(f"usseg: {exc}")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/features.smk"


# one rule file per method package (usseg/methods/<name>/, its steps in spec.py)
for _method in methods():

    include: f"workflow/rules/{_method}.smk"


include: "workflow/rules/refine.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


# Under a cluster executor these run on the submitting machine: downloads (and pretrained
# weights) need the network compute nodes often lack; the reports read every experiment's metrics.
localrules:
    all,
    download,
    fetch_checkpoint,
    weights,
    summary,
    datus2_benchmark,
    grid,


# Jobs write MLflow records that one process logs when the run ends: importing MLflow and
# opening its store would cost every job ~6 s (USSEG_TRACKING_SYNC=job logs as jobs end).
os.environ.setdefault("USSEG_TRACKING_SYNC", "end")


onstart:
    PLAN.write_experiment_files()


onsuccess:
    shell("usseg sync-runs")


onerror:
    shell("usseg sync-runs")


rule all:
    default_target: True
    input:
        "results/summary.md",
        PLAN.per_experiment("metrics"),
        REPORT_TARGETS,
