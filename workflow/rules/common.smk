# Snakemake's view of the job plan (usseg.jobplan): the validated parameters, and lookups of
# each job's paths, params and resources in the plan the methods' step specs define.
import json
import shlex
import sys
from pathlib import Path

from usseg import params as P
from usseg.errors import UssegError
from usseg.jobplan import PATHS, JobPlan
from usseg.steps import methods  # the rule files' specs

try:
    # errors name the source that holds the bad value (PARAM_SOURCES: Snakefile)
    # the schemas sit beside the Snakefile, also when `-d DIR` runs it elsewhere (a rehearsal)
    P.validate(
        dict(config), Path(workflow.basedir) / P.SCHEMA_DIR, sources=PARAM_SOURCES
    )
    PARAMS = P.select_preset(dict(config))
except UssegError as exc:
    sys.exit(f"usseg: {exc}")
PLAN = JobPlan(PARAMS)
DATASETS = PARAMS["data"]["datasets"]


wildcard_constraints:
    method="|".join(P.METHODS),
    exp="[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_.-]*",
    fkey="[A-Za-z0-9][A-Za-z0-9_.-]*",
    name="[A-Za-z0-9][A-Za-z0-9_.-]*",


def experiment(wc):
    """The experiment a job belongs to (fails clearly for names not in params.yaml)."""
    return PLAN.experiment(wc.exp)


def quote_json(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


def params_args(params, wc):
    record = PATHS["experiment"].format(exp=wc.exp)
    return f"--params {quote_json(params)} --experiment {record}"


def job_args(wc, group):
    """`--params` (a shared stage's whole group, e.g. refine) and `--experiment`."""
    return params_args(experiment(wc)["params"][group], wc)


def prepared_dir(wc):
    return PLAN.common(experiment(wc), "prepared")


def features_store(wc):
    return PLAN.common(experiment(wc), "features")


def split_of(wc):
    """The split an experiment's job processes (its dataset's)."""
    return DATASETS[experiment(wc)["dataset"]]["split"]


def final_labels(wc):
    return PLAN.final_labels(wc.exp)


# --- a method's steps (its spec, usseg/methods/<name>/spec.py) ---
def step_args(name):
    """`--params` of an experiment's step job: only the keys its spec reads."""
    return lambda wc: params_args(PLAN.step_params(wc.exp, name), wc)


def step_gpu(name):
    return lambda wc: PLAN.step_gpu(wc.exp, name)


def step_inputs(name):
    """The inputs a step declares, resolved for the job's experiment."""
    return lambda wc: PLAN.step_inputs(wc.exp, name)


def shared_inputs(name):
    """Input function of a shared rule: the inputs planned for its output path."""
    return lambda wc: PLAN.shared_job(name, wc.dataset, wc.backbone, wc.key).inputs


def shared_args(name):
    """`--params` of a shared job: only the step's own parameters (no experiment: it serves several)."""
    job = lambda wc: PLAN.shared_job(name, wc.dataset, wc.backbone, wc.key)
    return lambda wc: f"--params {quote_json(job(wc).params)}"


def shared_gpu(name):
    return lambda wc: PLAN.shared_job(name, wc.dataset, wc.backbone, wc.key).gpu


# --- job sizes: threads; the `gpu` resource (1 when a job's device setting may pick CUDA, as
# `auto` does), which cluster executors turn into a GPU request (locally: `--resources gpu=N`)
def rule_threads(rule):
    """A rule's threads from params.yaml `resources.threads`: its own entry, else `default`."""
    threads = PARAMS["resources"]["threads"]
    return threads.get(rule, threads["default"])


def vit_args(wc, input):
    """`--backbone` and `--weights` for a job that re-forwards the ViT when its weights are an input."""
    if "weights" not in input.keys():
        return ""
    return f"--backbone {experiment(wc)['backbone']} --weights {input.weights}"


def input_flags(names, flag):
    """Shell arguments naming some of a job's inputs, e.g. `--dataset-level PATH`."""
    return lambda wc, input: " ".join(f"{flag.format(n)} {input[n]}" for n in names)


# --- the results page (report.smk; `snakemake --report`) ---
# The wildcard a report entry's file pattern sets (evaluate.smk, multilevel.smk) -> its figure.
REPORT_FIGURES = {
    "confusion": "confusion matrix ({})",
    "iou": "per-class IoU ({})",
    "image": "overlay {}",
    "panel": "multilevel panel {}",
}


def report_labels(wc):
    """Labels of an experiment's report entries: the figure, and the setup it ran with."""
    key = next(key for key in REPORT_FIGURES if key in wc.keys())
    return PLAN.report_labels(wc.exp, REPORT_FIGURES[key].format(wc.get(key)))


GRID_IMAGES = PARAMS["tracking"]["pictures"]
# Reports over several experiments, targets of `all`: the methods' own (datus2's benchmark), the grids.
REPORT_TARGETS = [outputs[0] for outputs in PLAN.reports()]
