"""Cluster execution: per-rule threads from params.yaml, the SLURM profile as the plugin reads
it, and an end-to-end run on a real single-node SLURM whose metrics equal a local run's."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import KM_D2, make_workdir, run_tool, tiny_params
from slurm_cluster import ClusterError, SlurmUnavailable, start_cluster

PROFILE = Path(__file__).resolve().parents[1] / "workflow/profiles/slurm"


def stand_in_weights(folder: Path) -> Path:
    """A weights file for dry runs, which only need it to exist (validate and the weights rule's input)."""
    path = folder / "w.safetensors"
    path.touch()
    return path
EXPERIMENTS = KM_D2[:2]  # kmeans and datus2
# Rules whose jobs may ask for a GPU (their `gpu` resource follows their `device` parameter).
GPU_RULES = ("features", "datus2_segment_features", "multilevel_label", "context_aware_train",
             "context_aware_predict", "refine")  # fmt: skip
LOCAL_RULES = {"all", "download", "weights", "summary", "datus2_benchmark"}


def dry_run_jobs(wf: Path, *args: str) -> list[dict[str, Any]]:
    """Each job of a dry run: rule, threads and resources."""
    out = run_tool(wf, "snakemake", "-n", *args).stdout
    jobs = []
    for block in re.split(r"\n(?=rule \w+:\n)", out)[1:]:
        threads = re.search(r"^\s+threads: (\d+)$", block, re.M)
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        resources = dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {}
        jobs.append({"rule": re.match(r"rule (\w+):", block).group(1),
                     "threads": int(threads.group(1)) if threads else 1, "resources": resources})
    return jobs


def test_threads_come_from_params(tmp_path):
    """Each rule's threads: its resources.threads entry, else the default, whatever --cores is."""
    params = tiny_params(stand_in_weights(tmp_path), EXPERIMENTS,
                         resources={"threads": {"default": 1, "kmeans": 3, "features": 2}})
    wf = make_workdir(tmp_path, params)
    threads = {j["rule"]: j["threads"] for j in dry_run_jobs(wf, "--cores", "8")}
    assert threads["kmeans"] == 3 and threads["features"] == 2
    assert threads["refine"] == 1 and threads["datus2_segment_features"] == 1 and threads["evaluate"] == 1


@pytest.mark.parametrize("flag", ["-n", "--summary", "--dag"])
def test_inspection_needs_no_cores(tmp_path, flag):
    wf = make_workdir(tmp_path, tiny_params(stand_in_weights(tmp_path), EXPERIMENTS))
    proc = run_tool(wf, "snakemake", flag, "--workflow-profile", "none")
    expected = {"-n": "kmeans", "--summary": "results/metrics/kmeans/km.json", "--dag": "digraph"}[flag]
    assert expected in proc.stdout


class _Resources(dict):
    """A job's resources as the plugin reads them (`.get` and attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


class _Job:
    def __init__(self, job: dict[str, Any]) -> None:
        self.name, self.threads = job["rule"], job["threads"]
        self.resources = _Resources({k: int(v) if v.isdigit() else v for k, v in job["resources"].items()})


def test_slurm_profile_as_the_plugin_submits_it(tmp_path):
    """The sbatch line snakemake-executor-plugin-slurm builds for every job of the profile."""
    import logging

    from snakemake_executor_plugin_slurm.partitions import get_best_partition, read_partition_file
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    exps = [*EXPERIMENTS,
            {"name": "km-torch", "method": "kmeans", "dataset": "demo", "backbone": "dinov2_vits14",
             "overrides": {"refine": {"impl": "torch", "crf": "stego"}}},
            {"name": "ml", "method": "multilevel", "dataset": "demo", "backbone": "dinov2_vits14"},
            {"name": "ca", "method": "context_aware", "dataset": "demo", "backbone": "dinov2_vits14"},
            ]  # fmt: skip
    wf = make_workdir(tmp_path, tiny_params(stand_in_weights(tmp_path), exps))
    jobs = dry_run_jobs(wf, "--profile", "workflow/profiles/slurm", "--cores", "64")
    partitions = read_partition_file(wf / "workflow/profiles/slurm/partitions.yaml")
    submitted = {}
    for job in (_Job(j) for j in jobs if j["rule"] not in LOCAL_RULES):  # a dry run runs all locally
        validate_slurm_extra(job)
        params = {"run_uuid": "u", "slurm_logfile": "x.log", "comment_str": job.name, "account": "",
                  "partition": f" -p {get_best_partition(partitions, job, logging.getLogger('slurm'))}",
                  "workdir": str(wf)}
        call = get_submit_command(job, params) + set_gres_string(job)
        submitted.setdefault(job.name, set()).add(call)
    gpu = {"features", "datus2_segment_features", "multilevel_label", "context_aware_train",
           "context_aware_predict"}  # fmt: skip
    for rule, calls in submitted.items():
        for call in calls:
            on_gpu = rule in gpu or (rule == "refine" and "-p gpu" in call)
            assert ("-p gpu" in call) == on_gpu and ("--gpus=1" in call) == on_gpu, call
            assert ("-p cpu" in call) != on_gpu, call
    assert sum("-p gpu" in c for c in submitted["refine"]) == 1  # km-torch's refine only
    features = submitted["features"].pop()
    assert "--cpus-per-task=8" in features and "--mem 16000" in features and "-t 240" in features
    assert all("--cpus-per-task=1" in c and "--mem 8000" in c for c in submitted["evaluate"])


def _profile_without_gpus(wf: Path) -> Path:
    """The repo's SLURM profile for a cluster without GPUs (like this machine's): no GPU
    requests, and the threads of params.yaml, as the local run uses them."""
    cfg = yaml.safe_load((PROFILE / "config.yaml").read_text())
    del cfg["set-threads"]
    for rule in GPU_RULES:
        cfg["set-resources"].setdefault(rule, {})["gpu"] = 0
    cfg["retries"] = 0  # a failed job fails the test
    profile = wf.parent / "profile-no-gpu"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return profile


@pytest.fixture(scope="module")
def slurm():
    """A single-node SLURM cluster (partition `cpu`) for this module, stopped afterwards."""
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    most_memory = max(int(r.get("mem_mb", 0)) for r in profile["set-resources"].values())
    try:
        cluster = start_cluster(partition="cpu", min_memory_mb=most_memory)
    except SlurmUnavailable as exc:  # only where SLURM cannot be installed (not root, no apt-get)
        pytest.skip(f"SLURM unavailable: {exc}")
    except ClusterError as exc:
        pytest.fail(f"SLURM could not be started: {exc}", pytrace=False)
    yield cluster
    cluster.stop()


@pytest.mark.e2e
def test_slurm_run_matches_local(slurm, tmp_path, random_vits14, km_d2_workflow, capsys):
    """kmeans and datus2 through `snakemake --executor slurm`: every stage a SLURM job on the CPU
    partition sized by the profile, the reports local, the metrics those of a local run."""
    params = tiny_params(random_vits14, EXPERIMENTS)
    local = km_d2_workflow  # the same two experiments (and one more) run locally
    cluster = make_workdir(tmp_path, params)
    profile = _profile_without_gpus(cluster)

    start = time.monotonic()
    with pytest.MonkeyPatch.context() as env:
        for key, value in slurm.env.items():
            env.setenv(key, value)
        proc = run_tool(cluster, "snakemake", "--executor", "slurm", "--profile", str(profile),
                        "--workflow-profile", "none",
                        "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
                        timeout=1500)
    wall = time.monotonic() - start
    log = proc.stdout + proc.stderr

    submitted = dict(re.findall(r"submitted with SLURM jobid (\d+) \(log: \S*/slurm_logs/rule_(\w+)/", log))
    queue = {}
    for line in slurm.client("squeue", "--states=all", "--noheader", "--format=%i|%k|%T|%P|%C|%m").split():
        job_id, comment, state, partition, cpus, memory = line.split("|")
        queue[job_id] = {"rule": comment.removeprefix("rule_").split("_wildcards_")[0], "state": state,
                         "partition": partition, "cpus": int(cpus), "memory": memory}
    with capsys.disabled():
        print(f"\nSLURM run: {len(submitted)} jobs in {wall:.0f} s wall time")
        for job_id, job in sorted(queue.items(), key=lambda kv: int(kv[0])):
            print(f"  job {job_id}: {job['rule']} {job['state']} partition={job['partition']} "
                  f"cpus={job['cpus']} mem={job['memory']}")

    assert set(submitted) == set(queue)
    rules = sorted(job["rule"] for job in queue.values())
    assert rules == sorted(["prepare", "features", "kmeans", "refine", "evaluate", "datus2_segments",
                            "datus2_segment_features", "datus2_pseudolabels", "datus2_masks", "refine",
                            "evaluate"])
    assert all(j["state"] == "COMPLETED" and j["partition"] == "cpu" for j in queue.values())
    threads = params["resources"]["threads"]
    assert all(j["cpus"] == threads.get(j["rule"], threads["default"]) for j in queue.values())
    assert {j["memory"] for j in queue.values() if j["rule"] == "kmeans"} == {"32000M"}
    assert all(re.search(rf"^localrule {rule}:$", log, re.M) for rule in ("summary", "datus2_benchmark"))
    assert (cluster / "results/summary.md").exists() and (cluster / "results/datus2/benchmark.md").exists()

    for exp in EXPERIMENTS:
        path = f"results/metrics/{exp['method']}/{exp['name']}.json"
        assert json.loads((cluster / path).read_text()) == json.loads((local / path).read_text()), path
