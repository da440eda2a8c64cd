# Multilevel branch (Lightweight Clustering Framework, docs/methods/multilevel.md):
# dataset / category / image level masks -> consistency -> patch_scores.zarr -> shared
# refine (2-label CRF) -> labelling of the foreground regions -> shared evaluate.
# Each job gets only the multilevel keys it reads, so a change re-runs what follows it; the
# three levels write under results/multilevel/shared/{dataset}/{backbone}/, keyed by those
# keys (the step specs, usseg/methods/multilevel/spec.py), so ablations compute each level
# once. Like datus2's shared steps they start first among ready jobs (priority): the branch
# is a long chain.


# input name of a level's mask (dataset, category, image) -> its shared output
MULTILEVEL_LEVELS = methods()["multilevel"].step("multilevel_consistency").inputs


for _level in MULTILEVEL_LEVELS:
    _step = f"multilevel_{_level}"

    rule:
        name:
            _step
        input:
            unpack(shared_inputs(_step)),
        output:
            directory(PLAN.shared_pattern(_step)),
        log:
            f"results/logs/{_step}/{{dataset}}/{{backbone}}/{{key}}.log",
        priority: 1
        conda:
            "../envs/usseg.yaml"
        threads: rule_threads(_step)
        params:
            args=shared_args(_step),
            level=_level,
        shell:
            "usseg multilevel-level --level {params.level} --features {input.features}"
            " --dataset-dir {input.prepared} --out {output} {params.args} 2>&1 | tee {log}"


rule multilevel_consistency:
    input:
        unpack(step_inputs("multilevel_consistency")),
    output:
        scores=directory("results/multilevel/{exp}/patch_scores.zarr"),
        mask=directory("results/multilevel/{exp}/levels/consistent.zarr"),
    log:
        "results/logs/multilevel_consistency/{exp}.log",
    priority: 1
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("multilevel_consistency")
    params:
        args=step_args("multilevel_consistency"),
        levels=input_flags(MULTILEVEL_LEVELS, "--{}-level"),
    shell:
        "usseg multilevel-consistency {params.levels} --out {output.scores}"
        " --mask-out {output.mask} {params.args} 2>&1 | tee {log}"


rule multilevel_label:
    input:
        unpack(step_inputs("multilevel_label")),
        refined="results/multilevel/{exp}/refined",
        features=features_store,
        prepared=prepared_dir,
        consistent="results/multilevel/{exp}/levels/consistent.zarr",
    output:
        labels=directory("results/multilevel/{exp}/labels"),
        fg_iou="results/multilevel/{exp}/fg_iou.json",
        panels=report(
            directory("results/multilevel/{exp}/panels"),
            patterns=["{panel}.png"],
            caption="../report/panels.rst",
            category="Experiments",
            subcategory="{exp}",
            labels=report_labels,
        ),
    log:
        "results/logs/multilevel_label/{exp}.log",
    priority: 1
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("multilevel_label")
    resources:
        gpu=step_gpu("multilevel_label"),
    params:
        args=step_args("multilevel_label"),
        split=split_of,
        dataset=lambda wc: experiment(wc)["dataset"],  # for the report's captions
        backbone=lambda wc: experiment(wc)["backbone"],
        weights=lambda wc, input: (
            f"--weights {input.weights}" if "weights" in input.keys() else ""
        ),
        pictures=lambda wc: experiment(wc)["params"]["tracking"]["pictures"],
        levels=input_flags(MULTILEVEL_LEVELS, "--{}-level"),
    shell:
        "usseg multilevel-label --refined {input.refined} --features {input.features}"
        " --dataset-dir {input.prepared} --split {params.split} {params.levels}"
        " --consistent-level {input.consistent}"
        " --backbone {params.backbone} {params.weights} --out {output.labels} --fg-iou {output.fg_iou}"
        " --panels {output.panels} --pictures {params.pictures} {params.args} 2>&1 | tee {log}"
