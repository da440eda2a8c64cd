# Shared helpers: the validated parameters, experiment lookup and the paths between stages.
import json
import shlex
import sys

from usseg import params as P
from usseg.datasets.registry import adapter
from usseg.errors import UssegError

try:
    PARAMS = P.select_preset(dict(config))
    P.validate(PARAMS)
except UssegError as exc:
    sys.exit(f"usseg: {exc}")
EXPERIMENTS = P.resolve_experiments(PARAMS)
DATASETS = PARAMS["data"]["datasets"]
# The folder under results/{method}/{exp}/ that holds an experiment's final label maps.
FINAL_LABELS = {"kmeans": "refined", "multilevel": "labels"}
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


# --- job sizes (every rule's threads; the GPU rules' `gpu` resource) ---
def rule_threads(rule):
    """A rule's threads from params.yaml `resources.threads`: its own entry, else `default`."""
    threads = PARAMS["resources"]["threads"]
    return threads.get(rule, threads["default"])


def cuda(device):
    """1 when a `device` parameter may pick CUDA (`auto` does when one is present), else 0.

    Declared as the `gpu` resource, which cluster executors turn into a GPU request;
    locally it limits nothing unless `--resources gpu=N` is given.
    """
    return int(device != "cpu")


def experiment_gpu(wc, group):
    """The `gpu` resource of an experiment's job, from its stage group's parameters."""
    cfg = experiment(wc)["params"][group]
    if group == "refine":  # only the torch CRF runs on a GPU
        return cuda(cfg["device"]) if cfg["impl"] == "torch" else 0
    if group == "multilevel":  # only the crop embedding re-forwards the ViT
        label = cfg["label"]
        return cuda(label["device"]) if label["embedding"] == "crop" else 0
    return cuda(cfg["device"])


# --- datasets (datasets.smk) ---
def dataset_params(wc):
    return DATASETS[wc.dataset]


def raw_input(wc):
    cfg = DATASETS[wc.dataset]
    return (
        [f"data/raw/{wc.dataset}"]
        if adapter(cfg.get("adapter", wc.dataset)).NEEDS_DOWNLOAD
        else []
    )


# --- features (features.smk) ---
def feature_params(wc):
    per_backbone = PARAMS.get("backbones", {}).get(wc.backbone, {})
    cfg = dict(PARAMS["features"])
    if "image_size" in per_backbone:
        cfg["image_size"] = per_backbone["image_size"]
    cfg["split"] = DATASETS[wc.dataset]["split"]
    return cfg


# --- multilevel (multilevel.smk) ---
MULTILEVEL_KMEANS = ("seed", "normalize", "niter", "nredo")


def multilevel_args(wc, *keys):
    """`job_args` with `--params` restricted to the given keys of the multilevel group."""
    return job_args(wc, "multilevel", keys)


def multilevel_dir(wc):
    return f"results/multilevel/{wc.exp}"


def multilevel_label_inputs(wc):
    """The crop embedding re-forwards the ViT, so it needs the weights; attention does not."""
    exp = experiment(wc)
    if exp["params"]["multilevel"]["label"]["embedding"] == "crop":
        return {"weights": f"data/weights/{exp['backbone']}.safetensors"}
    return {}


# --- datus2 (datus2.smk) ---
def datus2_split(wc):
    return DATASETS[experiment(wc)["dataset"]]["split"]


def datus2_weights(wc):
    return f"data/weights/{experiment(wc)['backbone']}.safetensors"


def datus2_metrics():
    return [
        f"results/metrics/datus2/{n}.json"
        for n, e in EXPERIMENTS.items()
        if e["method"] == "datus2"
    ]


if datus2_metrics():
    REPORT_TARGETS.append("results/datus2/benchmark.md")


# --- context_aware (context_aware.smk) ---
CONTEXT_AWARE_PREDICT = (
    "output",
    "predict_temperature",
    "cluster_batch_size",
    "workers",
    "device",
    "amp",
)


def context_aware_args(wc, predict):
    """`job_args` with `--params` split between the training and prediction keys."""
    group = experiment(wc)["params"]["context_aware"]
    keys = [k for k in group if (k in CONTEXT_AWARE_PREDICT) == predict]
    if not predict:
        keys += ["device", "amp", "workers", "cluster_batch_size"]
    return job_args(wc, "context_aware", sorted(set(keys)))


def context_aware_inputs(wc, train=True):
    """The ViT's weights (arch=vit) and, for training, the ResNet's init checkpoint (when set)."""
    exp = experiment(wc)
    group = exp["params"]["context_aware"]
    inputs = {}
    if group["arch"] == "vit":
        inputs["weights"] = f"data/weights/{exp['backbone']}.safetensors"
    if train and group["checkpoint"]:
        inputs["checkpoint"] = group["checkpoint"]
    return inputs


def context_aware_vit(wc, input):
    if "weights" not in input.keys():
        return ""
    return f"--backbone {experiment(wc)['backbone']} --weights {input.weights}"
