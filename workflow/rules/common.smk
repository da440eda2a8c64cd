# Shared helpers: the validated parameters, experiment lookup and the paths between stages.
import json
import shlex
import sys

from usseg import params as P
from usseg.errors import UssegError

try:
    PARAMS = P.select_preset(dict(config))
    P.validate(PARAMS)
except UssegError as exc:
    sys.exit(f"usseg: {exc}")
EXPERIMENTS = P.resolve_experiments(PARAMS)
DATASETS = PARAMS["data"]["datasets"]
# The folder under results/{method}/{exp}/ that holds an experiment's final label maps.
FINAL_LABELS = {"kmeans": "refined"}
# Reports over several experiments that a branch adds to `rule all` (e.g. datus2's benchmark).
REPORT_TARGETS = []


wildcard_constraints:
    method="|".join(P.METHODS),
    exp="[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_.-]*",


def experiment(wc):
    """The experiment a job belongs to (fails clearly for names not in params.yaml)."""
    if wc.exp not in EXPERIMENTS:
        raise ValueError(f"experiment {wc.exp!r} is not in params.yaml's experiments")
    return EXPERIMENTS[wc.exp]


def quote_json(obj):
    return shlex.quote(json.dumps(obj, sort_keys=True))


def experiment_file(name):
    return f"results/.experiments/{name}.json"


def write_experiment_files():
    """Record each experiment (name, method, dataset, backbone, params hash, params) for its jobs.

    Jobs read it to find their MLflow parent run. It is not a rule input, so a parameter
    change re-runs only the jobs whose own parameters changed.
    """
    from usseg.atomic import write_json

    for name, exp in EXPERIMENTS.items():
        tag = {**exp, "mlflow_experiment": exp["params"]["tracking"]["experiment"]}
        write_json(experiment_file(name), tag)


def job_args(wc, group, keys=None):
    """`--params` (the experiment's resolved group, or some of its keys) and `--experiment`."""
    params = experiment(wc)["params"][group]
    if keys is not None:
        params = {k: params[k] for k in keys}
    return f"--params {quote_json(params)} --experiment {experiment_file(wc.exp)}"


def prepared_dir(wc):
    return f"data/prepared/{experiment(wc)['dataset']}"


def features_store(wc):
    exp = experiment(wc)
    return f"results/features/{exp['dataset']}/{exp['backbone']}.zarr"


def final_labels(wc):
    return f"results/{wc.method}/{wc.exp}/{FINAL_LABELS.get(wc.method, 'refined')}"


def metrics_targets():
    return [f"results/metrics/{e['method']}/{n}.json" for n, e in EXPERIMENTS.items()]
