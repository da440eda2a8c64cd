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


def job_args(wc, group):
    """`--params` (the experiment's resolved group) and `--experiment` for a tracked job."""
    exp = experiment(wc)
    tag = {k: exp[k] for k in ("name", "method", "dataset", "backbone", "params_hash")}
    tag["mlflow_experiment"] = exp["params"]["tracking"]["experiment"]
    return f"--params {quote_json(exp['params'][group])} --experiment {quote_json(tag)}"


def prepared_dir(wc):
    return f"data/prepared/{experiment(wc)['dataset']}"


def features_store(wc):
    exp = experiment(wc)
    return f"results/features/{exp['dataset']}/{exp['backbone']}.zarr"


def final_labels(wc):
    return f"results/{wc.method}/{wc.exp}/{FINAL_LABELS.get(wc.method, 'refined')}"


def metrics_targets():
    return [f"results/metrics/{e['method']}/{n}.json" for n, e in EXPERIMENTS.items()]
