# Multilevel branch (Lightweight Clustering Framework, docs/methods/multilevel.md):
# dataset / category / image level masks -> consistency -> patch_scores.zarr -> shared
# refine (2-label CRF) -> labelling of the foreground regions -> shared evaluate.
# Each job gets only the multilevel keys it reads, so a change re-runs what follows it.

FINAL_LABELS["multilevel"] = "labels"

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


for _level, _keys in (
    ("dataset", (*MULTILEVEL_KMEANS, "max_fit_patches", "dataset")),
    ("category", (*MULTILEVEL_KMEANS, "max_fit_patches", "category")),
    ("image", (*MULTILEVEL_KMEANS, "image")),
):

    rule:
        name:
            f"multilevel_{_level}"
        input:
            features=features_store,
            prepared=prepared_dir,
        output:
            directory(f"results/multilevel/{{exp}}/levels/{_level}.zarr"),
        params:
            args=lambda wc, keys=_keys: multilevel_args(wc, *keys),
            level=_level,
        threads: workflow.cores
        log:
            f"results/logs/multilevel_{_level}/{{exp}}.log",
        shell:
            "usseg multilevel-level --level {params.level} --features {input.features}"
            " --dataset-dir {input.prepared} --out {output} {params.args} 2>&1 | tee {log}"


rule multilevel_consistency:
    input:
        dataset="results/multilevel/{exp}/levels/dataset.zarr",
        category="results/multilevel/{exp}/levels/category.zarr",
        image="results/multilevel/{exp}/levels/image.zarr",
    output:
        scores=directory("results/multilevel/{exp}/patch_scores.zarr"),
        mask=directory("results/multilevel/{exp}/levels/consistent.zarr"),
    params:
        args=lambda wc: multilevel_args(wc, "consistency"),
        levels=lambda wc: f"{multilevel_dir(wc)}/levels",
    log:
        "results/logs/multilevel_consistency/{exp}.log",
    shell:
        "usseg multilevel-consistency --levels-dir {params.levels} --out {output.scores}"
        " --mask-out {output.mask} {params.args} 2>&1 | tee {log}"


rule multilevel_label:
    input:
        unpack(multilevel_label_inputs),
        refined="results/multilevel/{exp}/refined",
        features=features_store,
        prepared=prepared_dir,
        levels=expand(
            "results/multilevel/{{exp}}/levels/{level}.zarr", level=("dataset", "category", "image", "consistent")
        ),
    output:
        labels=directory("results/multilevel/{exp}/labels"),
        fg_iou="results/multilevel/{exp}/fg_iou.json",
        panels=directory("results/multilevel/{exp}/panels"),
    params:
        args=lambda wc: multilevel_args(wc, "seed", "niter", "nredo", "label"),
        split=lambda wc: DATASETS[experiment(wc)["dataset"]]["split"],
        backbone=lambda wc: experiment(wc)["backbone"],
        weights=lambda wc, input: f"--weights {input.weights}" if "weights" in input.keys() else "",
        pictures=lambda wc: experiment(wc)["params"]["tracking"]["pictures"],
        levels=lambda wc: f"{multilevel_dir(wc)}/levels",
    threads: workflow.cores
    log:
        "results/logs/multilevel_label/{exp}.log",
    shell:
        "usseg multilevel-label --refined {input.refined} --features {input.features}"
        " --dataset-dir {input.prepared} --split {params.split} --levels-dir {params.levels}"
        " --backbone {params.backbone} {params.weights} --out {output.labels} --fg-iou {output.fg_iou}"
        " --panels {output.panels} --pictures {params.pictures} {params.args} 2>&1 | tee {log}"
