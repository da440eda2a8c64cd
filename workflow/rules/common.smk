# Shared helpers: the validated parameters, experiment lookup and the paths between stages.
import json
import shlex
import sys
from pathlib import Path

from usseg import params as P
from usseg.datasets.registry import adapter
from usseg.errors import UssegError

try:
    # errors name the source that holds the bad value (PARAM_SOURCES: Snakefile)
    # the schemas sit beside the Snakefile, also when `-d DIR` runs it elsewhere (a rehearsal)
    P.validate(
        dict(config), Path(workflow.basedir) / P.SCHEMA_DIR, sources=PARAM_SOURCES
    )
    PARAMS = P.select_preset(dict(config))
except UssegError as exc:
    sys.exit(f"usseg: {exc}")
EXPERIMENTS = P.resolve_experiments(PARAMS)
DATASETS = PARAMS["data"]["datasets"]
# Feature stores by (dataset, backbone, key): the features params each one is built with.
FEATURE_STORES = {
    (e["dataset"], e["backbone"], e["features_key"]): e["params"]["features"]
    for e in EXPERIMENTS.values()
}
# The folder under results/{method}/{exp}/ that holds an experiment's final label maps.
FINAL_LABELS = {"kmeans": "refined", "multilevel": "labels"}
# Reports over several experiments that a branch adds to `rule all` (e.g. datus2's benchmark).
REPORT_TARGETS = []


wildcard_constraints:
    method="|".join(P.METHODS),
    exp="[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    backbone="[A-Za-z0-9][A-Za-z0-9_.-]*",
    fkey="[A-Za-z0-9][A-Za-z0-9_.-]*",
    name="[A-Za-z0-9][A-Za-z0-9_.-]*",


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


def features_store_of(exp):
    """The experiment's store, named by what its features depend on (shared when equal)."""
    return f"results/features/{exp['dataset']}/{exp['backbone']}/{exp['features_key']}.zarr"


def features_store(wc):
    return features_store_of(experiment(wc))


def final_labels(wc):
    return f"results/{wc.method}/{wc.exp}/{FINAL_LABELS.get(wc.method, 'refined')}"


def metrics_targets():
    return [f"results/metrics/{e['method']}/{n}.json" for n, e in EXPERIMENTS.items()]


def eval_reports():
    """Every experiment's evaluate report folder (it holds the full metrics.json)."""
    return [f"results/{e['method']}/{n}/eval" for n, e in EXPERIMENTS.items()]


# --- shared steps: outputs keyed by the parameters they depend on, not by the experiment ---
# path -> {"params": the step's parameters, "inputs": its input paths}; an ablation or a
# sweep shares every step whose parameters and inputs it has in common with another.
SHARED = {}


def shared_step(exp, method, step, params, inputs):
    """Register one step of ``exp`` and return its output path (shared when equal)."""
    key = P.params_hash({"params": params, "inputs": inputs})[:12]
    path = (
        f"results/{method}/shared/{exp['dataset']}/{exp['backbone']}/{step}-{key}.zarr"
    )
    SHARED[path] = {"params": params, "inputs": inputs}
    return path


def shared_path(method, step, wc):
    path = f"results/{method}/shared/{wc.dataset}/{wc.backbone}/{step}-{wc.key}.zarr"
    if path not in SHARED:
        raise ValueError(
            f"{path}: no experiment of params.yaml uses this {method} {step} output"
        )
    return path


def shared_params(method, step, wc):
    return SHARED[shared_path(method, step, wc)]["params"]


def shared_inputs(method, step):
    """Input function of a shared rule: the inputs recorded for its output path."""
    return lambda wc: SHARED[shared_path(method, step, wc)]["inputs"]


def shared_args(method, step):
    """`--params` of a shared job: only the step's own parameters (no experiment: it serves several)."""
    return lambda wc: f"--params {quote_json(shared_params(method, step, wc))}"


def pick(group, keys):
    return {k: group[k] for k in keys}


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
    """What prepare depends on: the dataset's settings without its features block."""
    return P.without_features(DATASETS[wc.dataset])


def prepare_inputs(wc):
    """The raw download, or the local files (a folder dataset's) that prepare reads."""
    cfg = DATASETS[wc.dataset]
    impl = adapter(cfg.get("adapter", wc.dataset))
    if impl.NEEDS_DOWNLOAD:
        return {"raw": f"data/raw/{wc.dataset}"}
    if hasattr(impl, "input_files"):
        return {"files": [str(p) for p in impl.input_files(cfg)]}
    return {}


def download_inputs(wc):
    """Archives given by a local `path`: inputs, so replacing one re-runs the download."""
    archives = DATASETS[wc.dataset].get("archives") or {}
    return [spec["path"] for spec in archives.values() if spec.get("path")]


# --- weights (weights.smk) ---
def backbone_params(wc):
    """What `usseg weights` depends on: the backbone's settings without its features block."""
    return P.without_features(
        PARAMS.get("backbones", {}).get(wc.backbone, {"weights": None})
    )


def checkpoint_params(wc):
    """The `checkpoints` entry a fetch job downloads and verifies."""
    entries = PARAMS.get("checkpoints") or {}
    if wc.name not in entries:
        raise ValueError(
            f"data/checkpoints/{wc.name}.pth: params.yaml has no checkpoints.{wc.name}"
        )
    return entries[wc.name]


def weights_inputs(wc):
    """A local checkpoint (`weights`): an input, so a file replaced in place re-converts."""
    weights = backbone_params(wc).get("weights")
    return {"checkpoint": weights} if weights else {}


# --- features (features.smk) ---
def feature_params(wc):
    key = (wc.dataset, wc.backbone, wc.fkey)
    if key not in FEATURE_STORES:
        raise ValueError(f"no experiment reads feature store {key}")
    return {**FEATURE_STORES[key], "split": DATASETS[wc.dataset]["split"]}


# --- multilevel (multilevel.smk) ---
MULTILEVEL_KMEANS = ("seed", "normalize", "niter", "nredo")
# Each level reads these keys of the multilevel group: its output is shared by every
# experiment (ablations included) that agrees on them, the features and the dataset.
MULTILEVEL_LEVELS = {
    "dataset": (*MULTILEVEL_KMEANS, "max_fit_patches", "dataset"),
    "category": (*MULTILEVEL_KMEANS, "max_fit_patches", "category"),
    "image": (*MULTILEVEL_KMEANS, "image"),
}


def multilevel_args(wc, *keys):
    """`job_args` with `--params` restricted to the given keys of the multilevel group."""
    return job_args(wc, "multilevel", keys)


def multilevel_levels(wc):
    """The experiment's three level masks (shared paths) by name."""
    return MULTILEVEL_STEPS[wc.exp]


def multilevel_level_args(wc, input):
    return " ".join(f"--{name}-level {input[name]}" for name in MULTILEVEL_LEVELS)


def multilevel_label_inputs(wc):
    """The levels, and the weights when the crop embedding re-forwards the ViT."""
    exp = experiment(wc)
    inputs = dict(multilevel_levels(wc))
    if exp["params"]["multilevel"]["label"]["embedding"] == "crop":
        inputs["weights"] = f"data/weights/{exp['backbone']}.safetensors"
    return inputs


def plan_multilevel(exp):
    group, features = exp["params"]["multilevel"], features_store_of(exp)
    prepared = f"data/prepared/{exp['dataset']}"
    return {
        level: shared_step(
            exp,
            "multilevel",
            f"level_{level}",
            pick(group, keys),
            {"features": features, "prepared": prepared},
        )
        for level, keys in MULTILEVEL_LEVELS.items()
    }


# --- datus2 (datus2.smk) ---
# The keys of the datus2 group each step reads; a K sweep shares segments and segment features.
DATUS2_KEYS = {
    "segments": ("center", "threshold", "resolution", "seed", "tau"),
    "segment_features": ("fill", "crop_resize", "crop_size", "batch_size", "device"),
    "pseudolabels": ("k", "pca", "init", "epochs", "kmeans_batch_size", "seed"),
}


def datus2_split(wc):
    return DATASETS[wc.dataset]["split"]


def plan_datus2(exp):
    group = exp["params"]["datus2"]
    prepared = f"data/prepared/{exp['dataset']}"
    segments = shared_step(
        exp,
        "datus2",
        "segments",
        pick(group, DATUS2_KEYS["segments"]),
        {"features": features_store_of(exp)},
    )
    segment_features = shared_step(
        exp,
        "datus2",
        "segment_features",
        pick(group, DATUS2_KEYS["segment_features"]),
        {
            "segments": segments,
            "prepared": prepared,
            "weights": f"data/weights/{exp['backbone']}.safetensors",
        },
    )
    pseudolabels = shared_step(
        exp,
        "datus2",
        "pseudolabels",
        pick(group, DATUS2_KEYS["pseudolabels"]),
        {"features": segment_features, "prepared": prepared},
    )
    return {"segments": segments, "pseudolabels": pseudolabels}


def datus2_masks_inputs(wc):
    return DATUS2_STEPS[wc.exp]


def datus2_metrics():
    return [
        f"results/datus2/{n}/eval"
        for n, e in EXPERIMENTS.items()
        if e["method"] == "datus2"
    ]


if datus2_metrics():
    REPORT_TARGETS.append("results/datus2/benchmark.md")


# Every experiment's shared steps, registered once when the workflow starts.
MULTILEVEL_STEPS = {
    n: plan_multilevel(e) for n, e in EXPERIMENTS.items() if e["method"] == "multilevel"
}
DATUS2_STEPS = {
    n: plan_datus2(e) for n, e in EXPERIMENTS.items() if e["method"] == "datus2"
}


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
    # data/checkpoints/{name}.pth is fetched by the DAG; any other path is the user's file
    if train and group["checkpoint"]:
        inputs["checkpoint"] = group["checkpoint"]
    return inputs


def context_aware_vit(wc, input):
    if "weights" not in input.keys():
        return ""
    return f"--backbone {experiment(wc)['backbone']} --weights {input.weights}"


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
    exp = experiment(wc)
    figure = next(
        text.format(wc.get(key))
        for key, text in REPORT_FIGURES.items()
        if key in wc.keys()
    )
    return {
        "figure": figure,
        "method": exp["method"],
        "dataset": exp["dataset"],
        "backbone": exp["backbone"],
        "matching": exp["params"]["evaluate"]["matching"],
        "CRF": exp["params"]["refine"]["crf"],
    }


def grid_experiments(dataset):
    """The experiments on ``dataset``, in params.yaml order."""
    return [(n, e) for n, e in EXPERIMENTS.items() if e["dataset"] == dataset]


def grid_inputs(wc):
    """Each experiment's eval report (its matching) and final label maps, in the same order."""
    exps = grid_experiments(wc.dataset)
    if not exps:
        raise ValueError(f"no experiment of params.yaml runs on dataset {wc.dataset!r}")
    return {
        "prepared": f"data/prepared/{wc.dataset}",
        "evals": [f"results/{e['method']}/{n}/eval" for n, e in exps],
        "labels": [
            f"results/{e['method']}/{n}/{FINAL_LABELS.get(e['method'], 'refined')}"
            for n, e in exps
        ],
    }


def grid_args(wc, input):
    return " ".join(
        f"--eval {e} --labels {l}" for e, l in zip(input.evals, input.labels)
    )


GRID_IMAGES = PARAMS["tracking"]["pictures"]
if GRID_IMAGES > 0:
    REPORT_TARGETS.extend(
        f"results/grids/{d}.png"
        for d in dict.fromkeys(e["dataset"] for e in EXPERIMENTS.values())
    )
