"""The job plan (usseg.jobplan) and the step specs it reads, checked without Snakemake."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import tiny_params
from usseg import params as P
from usseg.artifacts.digest import params_hash
from usseg.jobplan import JobPlan
from usseg.steps import COMMON_INPUTS, Method, Step, methods, register_method

SWEEP = [
    {"name": "km", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14"},
    {"name": "d2", "method": "datus2", "dataset": "demo", "backbone": "dinov2_vits14"},
    {"name": "d2-k3", "method": "datus2", "dataset": "demo", "backbone": "dinov2_vits14",
     "overrides": {"datus2": {"k": 3}}},
    {"name": "ml", "method": "multilevel", "dataset": "demo", "backbone": "dinov2_vits14"},
    {"name": "ml-min", "method": "multilevel", "dataset": "demo", "backbone": "dinov2_vits14",
     "overrides": {"multilevel": {"label": {"min_area": 0.05, "embedding": "attention"}}}},
    {"name": "ca", "method": "context_aware", "dataset": "demo", "backbone": "dinov2_vits14"},
]  # fmt: skip


@pytest.fixture(scope="module")
def plan(tmp_path_factory: pytest.TempPathFactory) -> JobPlan:
    weights = tmp_path_factory.mktemp("w") / "random.safetensors"
    weights.write_bytes(b"")
    params = tiny_params(weights, SWEEP)
    P.validate(params)
    return JobPlan(P.select_preset(params))


def test_every_method_package_declares_its_steps() -> None:
    declared = methods()
    packages = sorted(p.parent.name for p in (Path(P.__file__).parent / "methods").glob("*/spec.py"))
    assert sorted(declared) == sorted(P.METHODS) == packages
    assert {"context_aware", "datus2", "kmeans", "multilevel"} <= set(declared)
    assert [s.name for s in declared["datus2"].shared_steps] == [
        "datus2_segments", "datus2_segment_features", "datus2_pseudolabels"
    ]  # fmt: skip
    assert declared["multilevel"].final_labels == "labels" and declared["kmeans"].final_labels == "refined"


def test_shared_path_is_the_hash_of_its_params_and_inputs(plan: JobPlan) -> None:
    exp = plan.experiments["d2"]
    group = exp["params"]["datus2"]
    features = f"results/features/demo/dinov2_vits14/{exp['features_key']}.zarr"
    params = {k: group[k] for k in ("center", "threshold", "resolution", "seed", "tau")}
    key = params_hash({"params": params, "inputs": {"features": features}})[:12]
    path = f"results/datus2/shared/demo/dinov2_vits14/segments-{key}.zarr"
    assert plan.shared_of["d2"]["segments"] == path
    assert plan.shared[path].params == params and plan.shared[path].inputs == {"features": features}


def test_a_k_sweep_shares_segments_and_segment_features_only(plan: JobPlan) -> None:
    a, b = plan.shared_of["d2"], plan.shared_of["d2-k3"]
    assert a["segments"] == b["segments"] and a["segment_features"] == b["segment_features"]
    assert a["pseudolabels"] != b["pseudolabels"]
    assert plan.shared[b["pseudolabels"]].params["k"] == 3
    assert plan.shared[b["pseudolabels"]].inputs["features"] == b["segment_features"]


def test_a_labelling_ablation_shares_all_three_levels(plan: JobPlan) -> None:
    assert plan.shared_of["ml"] == plan.shared_of["ml-min"]
    assert set(plan.shared_of["ml"]) == {"level_dataset", "level_category", "level_image"}
    assert plan.step_params("ml-min", "multilevel_label")["label"]["min_area"] == 0.05
    assert set(plan.step_params("ml", "multilevel_label")) == {"seed", "niter", "nredo", "label"}
    # the six level jobs of two experiments are three
    assert len([p for p in plan.shared if "/multilevel/" in p]) == 3


def test_step_inputs_and_params_resolve_per_experiment(plan: JobPlan) -> None:
    masks = plan.step_inputs("d2-k3", "datus2_masks")
    assert masks == {"segments": plan.shared_of["d2-k3"]["segments"],
                     "pseudolabels": plan.shared_of["d2-k3"]["pseudolabels"],
                     "prepared": "data/prepared/demo"}  # fmt: skip
    assert plan.step_params("d2", "datus2_masks") == {}
    train, predict = plan.step_params("ca", "context_aware_train"), plan.step_params("ca", "context_aware_predict")
    assert "predict_temperature" not in train and "output" not in train and "epochs" in train
    assert set(predict) == {"output", "predict_temperature", "cluster_batch_size", "workers", "device", "amp"}


def test_final_labels_and_reports(plan: JobPlan) -> None:
    assert plan.final_labels("ml") == "results/multilevel/ml/labels"
    assert plan.final_labels("km") == "results/kmeans/km/refined"
    assert plan.per_experiment("metrics")[0] == "results/metrics/kmeans/km.json"
    assert plan.reports() == [tuple(f"results/datus2/benchmark.{e}" for e in ("md", "csv", "png")),
                              ("results/grids/demo.png",)]  # fmt: skip


def test_gpu_follows_the_step_device(plan: JobPlan) -> None:
    # params.yaml: context_aware device auto, multilevel's crop embedding on device auto (both may pick
    # CUDA); the attention embedding re-forwards nothing
    assert plan.experiments["ca"]["params"]["context_aware"]["device"] == "auto"
    assert plan.step_gpu("ca", "context_aware_train") == plan.step_gpu("ca", "context_aware_predict") == 1
    assert plan.step_params("ml", "multilevel_label")["label"]["embedding"] == "crop"
    assert plan.step_gpu("ml", "multilevel_label") == 1 and plan.step_gpu("ml-min", "multilevel_label") == 0


def test_unplanned_shared_output_is_an_error_naming_it(plan: JobPlan) -> None:
    with pytest.raises(ValueError, match="segments-000000000000.zarr: no experiment of params.yaml uses"):
        plan.shared_job("datus2_segments", "demo", "dinov2_vits14", "000000000000")


def test_a_spec_naming_an_unknown_input_is_refused() -> None:
    bad = Method("bad", cli="x", steps=(Step("bad_a", "bad-a", shared=True, output="a", inputs={"x": "nope"}),))
    with pytest.raises(ValueError, match="bad step bad_a: unknown inputs \\['nope'\\]"):
        register_method(bad)
    assert "bad" not in methods() and "prepared" in COMMON_INPUTS


def test_shared_artifacts_are_the_common_inputs_and_every_shared_output() -> None:
    """What an experiment's MLflow run lists as inputs besides its own jobs' (tracking.sync)."""
    from usseg.steps import shared_artifacts

    assert sorted(shared_artifacts()) == [
        "clusters", "features", "level_category", "level_dataset", "level_image", "prepared",
        "pseudolabels", "segment_features", "segments", "weights"]  # fmt: skip
