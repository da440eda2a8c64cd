# DatUS² branch: Louvain segments -> segment CLS features -> dataset-level pseudo-labels
# -> dense patch-level pseudo-masks; then the shared refine and evaluate rules.
# The first three steps write under results/datus2/shared/{dataset}/{backbone}/, keyed by
# the parameters they read (common.smk `plan_datus2`): a K sweep runs Louvain and the
# segment CLS forward once. The branch's jobs start first among ready jobs (priority 2): theirs
# is the longest chain after the features.
# `snakemake results/datus2/benchmark.md` builds the backbone benchmark over the active
# preset's datus2 experiments.


rule datus2_segments:
    input:
        unpack(shared_inputs("datus2", "segments")),
    output:
        directory("results/datus2/shared/{dataset}/{backbone}/segments-{key}.zarr"),
    log:
        "results/logs/datus2_segments/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_segments")
    params:
        args=shared_args("datus2", "segments"),
    shell:
        "usseg datus2-segments --features {input.features} --out {output} {params.args} 2>&1 | tee {log}"


rule datus2_segment_features:
    input:
        unpack(shared_inputs("datus2", "segment_features")),
    output:
        directory(
            "results/datus2/shared/{dataset}/{backbone}/segment_features-{key}.zarr"
        ),
    log:
        "results/logs/datus2_segment_features/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_segment_features")
    resources:
        gpu=lambda wc: cuda(shared_params("datus2", "segment_features", wc)["device"]),
    params:
        args=shared_args("datus2", "segment_features"),
        split=datus2_split,
    shell:
        "usseg datus2-segment-features --segments {input.segments} --dataset-dir {input.prepared}"
        " --split {params.split} --backbone {wildcards.backbone} --weights {input.weights}"
        " --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"


rule datus2_pseudolabels:
    input:
        unpack(shared_inputs("datus2", "pseudolabels")),
    output:
        directory("results/datus2/shared/{dataset}/{backbone}/pseudolabels-{key}.zarr"),
    log:
        "results/logs/datus2_pseudolabels/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_pseudolabels")
    params:
        args=shared_args("datus2", "pseudolabels"),
    shell:
        "usseg datus2-pseudolabels --segment-features {input.features} --dataset-dir {input.prepared}"
        " --out {output} {params.args} 2>&1 | tee {log}"


rule datus2_masks:
    input:
        unpack(datus2_masks_inputs),
        prepared=prepared_dir,
    output:
        scores=directory("results/datus2/{exp}/patch_scores.zarr"),
        pictures=directory("results/datus2/{exp}/pictures"),
    log:
        "results/logs/datus2_masks/{exp}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_masks")
    params:
        args=lambda wc: job_args(wc, "datus2", ()),
        split=lambda wc: DATASETS[experiment(wc)["dataset"]]["split"],
        pictures=lambda wc: experiment(wc)["params"]["tracking"]["pictures"],
    shell:
        "usseg datus2-masks --segments {input.segments} --pseudolabels {input.pseudolabels}"
        " --dataset-dir {input.prepared} --split {params.split} --out {output.scores}"
        " --pictures-dir {output.pictures} --pictures {params.pictures} {params.args} 2>&1 | tee {log}"


rule datus2_benchmark:
    input:
        datus2_metrics(),
    output:
        md="results/datus2/benchmark.md",
        csv="results/datus2/benchmark.csv",
        png=report(
            "results/datus2/benchmark.png",
            caption="../report/benchmark.rst",
            category="Comparison",
            subcategory="datus2 benchmark",
            labels={"figure": "datus2 backbone benchmark"},
        ),
    log:
        "results/logs/datus2_benchmark.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_benchmark")
    shell:
        "usseg datus2-benchmark {input} --out-md {output.md} --out-csv {output.csv} --out-png {output.png}"
        " 2>&1 | tee {log}"
