"""params.yaml -> the concrete jobs: every path between stages and each job's resolved params.

One table of path patterns (``PATHS``) and the methods' step declarations
(``usseg.steps``) are all it reads; Snakemake's helpers (workflow/rules/common.smk) look
jobs up here, and the tests check the plan without Snakemake.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from usseg import params as P
from usseg.artifacts.atomic import write_json
from usseg.artifacts.digest import params_hash
from usseg.steps import COMMON_INPUTS, Method, Step, method, methods

PATHS = {
    "prepared": "data/prepared/{dataset}",
    "weights": "data/weights/{backbone}.safetensors",
    "features": "results/features/{dataset}/{backbone}/{fkey}.zarr",
    "shared": "results/{method}/shared/{dataset}/{backbone}/{output}-{key}.zarr",
    "experiment": "results/.experiments/{exp}.json",
    "labels": "results/{method}/{exp}/{folder}",
    "eval": "results/{method}/{exp}/eval",
    "metrics": "results/metrics/{method}/{exp}.json",
    "grid": "results/grids/{dataset}.png",
}


# rule name -> (method, step) of every step a method declares
STEPS = {s.name: (m, s) for m in methods().values() for s in m.steps}


@dataclass(frozen=True)
class SharedJob:
    """One shared step's job: it serves every experiment whose plan names its path."""

    method: str
    step: Step
    path: str
    params: dict[str, Any]
    inputs: dict[str, str]

    @property
    def gpu(self) -> int:
        return self.step.gpu(self.params)


class JobPlan:
    """The active preset's experiments, their shared jobs and every path they hand over."""

    def __init__(self, params: Mapping[str, Any]) -> None:
        self.params = params
        self.experiments = P.resolve_experiments(dict(params))
        # feature store (dataset, backbone, key) -> the features params it is built with
        self.feature_stores = {
            (e["dataset"], e["backbone"], e["features_key"]): e["params"]["features"]
            for e in self.experiments.values()
        }
        self.shared: dict[str, SharedJob] = {}
        # experiment -> shared output name (e.g. "segments") -> its path
        self.shared_of: dict[str, dict[str, str]] = {}
        for name, exp in self.experiments.items():
            self.shared_of[name] = self._plan_shared(exp, method(exp["method"]))

    def common(self, exp: Mapping[str, Any], name: str) -> str:
        """The path of a ``COMMON_INPUTS`` artifact for ``exp``."""
        return PATHS[name].format(dataset=exp["dataset"], backbone=exp["backbone"], fkey=exp["features_key"])

    def _plan_shared(self, exp: Mapping[str, Any], spec: Method) -> dict[str, str]:
        group = exp["params"][spec.name]
        outputs: dict[str, str] = {}
        for step in spec.shared_steps:
            inputs = {
                k: outputs[v] if v not in COMMON_INPUTS else self.common(exp, v)
                for k, v in step.input_names(group).items()
            }
            params = step.params(group)
            key = params_hash({"params": params, "inputs": inputs})[:12]
            path = PATHS["shared"].format(method=spec.name, dataset=exp["dataset"], backbone=exp["backbone"],
                                          output=step.output, key=key)  # fmt: skip
            self.shared[path] = SharedJob(spec.name, step, path, params, inputs)
            outputs[step.output] = path
        return outputs

    def shared_pattern(self, step_name: str) -> str:
        """The output path of a shared step with the ``{dataset}``, ``{backbone}``, ``{key}`` wildcards."""
        spec, step = STEPS[step_name]
        return PATHS["shared"].format(
            method=spec.name, output=step.output, dataset="{dataset}", backbone="{backbone}", key="{key}"
        )

    def shared_job(self, step_name: str, dataset: str, backbone: str, key: str) -> SharedJob:
        """The planned job of that shared step's output (an error when no experiment uses it)."""
        path = self.shared_pattern(step_name).format(dataset=dataset, backbone=backbone, key=key)
        if path not in self.shared:
            spec, step = STEPS[step_name]
            raise ValueError(
                f"{path}: no experiment of params.yaml uses this {spec.name} {step.output} output"
            )
        return self.shared[path]

    def experiment(self, name: str) -> dict[str, Any]:
        if name not in self.experiments:
            raise ValueError(f"experiment {name!r} is not in params.yaml's experiments")
        return self.experiments[name]

    def step_params(self, exp_name: str, step_name: str) -> dict[str, Any]:
        """The resolved params one experiment's step job receives."""
        exp = self.experiment(exp_name)
        return method(exp["method"]).step(step_name).params(exp["params"][exp["method"]])

    def step_inputs(self, exp_name: str, step_name: str) -> dict[str, str]:
        """The paths of the inputs an experiment's step declares (shared outputs, common artifacts)."""
        exp = self.experiment(exp_name)
        step = method(exp["method"]).step(step_name)
        group, shared = exp["params"][exp["method"]], self.shared_of[exp_name]
        names = step.input_names(group)
        return {**{k: self.common(exp, v) if v in COMMON_INPUTS else shared[v] for k, v in names.items()},
                **step.files(group)}  # fmt: skip

    def step_gpu(self, exp_name: str, step_name: str) -> int:
        exp = self.experiment(exp_name)
        return method(exp["method"]).step(step_name).gpu(self.step_params(exp_name, step_name))

    def final_labels(self, exp_name: str) -> str:
        """The folder of an experiment's final label maps (what evaluation reads)."""
        exp = self.experiment(exp_name)
        folder = method(exp["method"]).final_labels
        return PATHS["labels"].format(method=exp["method"], exp=exp_name, folder=folder)

    def per_experiment(self, kind: str) -> list[str]:
        """``PATHS[kind]`` of every experiment (eval reports, metrics files), in params.yaml order."""
        return [PATHS[kind].format(method=e["method"], exp=n) for n, e in self.experiments.items()]

    def method_evals(self, method_name: str) -> list[str]:
        return [PATHS["eval"].format(method=e["method"], exp=n) for n, e in self.experiments.items()
                if e["method"] == method_name]  # fmt: skip

    def dataset_params(self, dataset: str) -> dict[str, Any]:
        """What download and prepare depend on: the dataset's settings without its features block."""
        return P.without_features(self.params["data"]["datasets"][dataset])

    def download_inputs(self, dataset: str) -> list[str]:
        """Archives given by a local `path`: inputs, so replacing one re-runs the download."""
        archives = self.params["data"]["datasets"][dataset].get("archives") or {}
        return [spec["path"] for spec in archives.values() if spec.get("path")]

    def prepare_inputs(self, dataset: str) -> dict[str, Any]:
        """The raw download, or the local files (a folder dataset's) that prepare reads."""
        from usseg.datasets.registry import adapter
        from usseg.job_args import build_typed

        cfg = self.dataset_params(dataset)
        impl = adapter(cfg.get("adapter", dataset))
        if impl.NEEDS_DOWNLOAD:
            return {"raw": f"data/raw/{dataset}"}
        if hasattr(impl, "input_files"):
            return {"files": [str(p) for p in impl.input_files(build_typed(impl.PARAMS, cfg))]}
        return {}

    def backbone_params(self, backbone: str) -> dict[str, Any]:
        """What `usseg weights` depends on: the backbone's settings without its features block."""
        return P.without_features((self.params.get("backbones") or {}).get(backbone, {"weights": None}))

    def weights_inputs(self, backbone: str) -> dict[str, str]:
        """A local checkpoint (`weights`): an input, so a file replaced in place re-converts."""
        weights = self.backbone_params(backbone).get("weights")
        return {"checkpoint": weights} if weights else {}

    def checkpoint_params(self, name: str) -> dict[str, Any]:
        """The `checkpoints` entry a fetch job downloads and verifies."""
        entries = self.params.get("checkpoints") or {}
        if name not in entries:
            raise ValueError(f"data/checkpoints/{name}.pth: params.yaml has no checkpoints.{name}")
        return entries[name]

    def refine_gpu(self, exp_name: str) -> int:
        """Only the torch CRF runs on a GPU."""
        cfg = self.experiment(exp_name)["params"]["refine"]
        return int(cfg["impl"] == "torch" and cfg["device"] != "cpu")

    def feature_params(self, dataset: str, backbone: str, fkey: str) -> dict[str, Any]:
        """What one feature store's job receives: its features params and the split."""
        key = (dataset, backbone, fkey)
        if key not in self.feature_stores:
            raise ValueError(f"no experiment reads feature store {key}")
        return {**self.feature_stores[key], "split": self.params["data"]["datasets"][dataset]["split"]}

    def grid_inputs(self, dataset: str) -> dict[str, Any]:
        """The experiments on ``dataset`` in params.yaml order: their eval reports and final labels."""
        names = [n for n, e in self.experiments.items() if e["dataset"] == dataset]
        if not names:
            raise ValueError(f"no experiment of params.yaml runs on dataset {dataset!r}")
        return {
            "prepared": PATHS["prepared"].format(dataset=dataset),
            "evals": [PATHS["eval"].format(method=self.experiments[n]["method"], exp=n) for n in names],
            "labels": [self.final_labels(n) for n in names],
        }

    def write_experiment_files(self) -> None:
        """Record each experiment (name, method, dataset, backbone, params hash, params) for its jobs.

        Jobs read it to find their MLflow parent run. It is not a rule input, so a parameter
        change re-runs only the jobs whose own parameters changed.
        """
        for name, exp in self.experiments.items():
            tag = {**exp, "mlflow_experiment": exp["params"]["tracking"]["experiment"]}
            write_json(PATHS["experiment"].format(exp=name), tag)

    def report_labels(self, exp_name: str, figure: str) -> dict[str, str]:
        """Labels of an experiment's entry on the results page: the figure, and the setup it ran with."""
        exp = self.experiment(exp_name)
        groups = exp["params"]
        return {"figure": figure, "method": exp["method"], "dataset": exp["dataset"], "backbone": exp["backbone"],
                "matching": groups["evaluate"]["matching"], "CRF": groups["refine"]["crf"]}  # fmt: skip

    def reports(self) -> list[tuple[str, ...]]:
        """Cross-experiment reports, each its target first: the methods' own, then one grid per dataset."""
        used = {e["method"] for e in self.experiments.values()}
        out = [r.outputs for m in sorted(used) for r in methods()[m].reports]
        if self.params["tracking"]["pictures"] > 0:
            datasets = dict.fromkeys(e["dataset"] for e in self.experiments.values())
            out += [(PATHS["grid"].format(dataset=d),) for d in datasets]
        return out
