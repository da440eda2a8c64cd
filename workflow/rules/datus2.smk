# DatUS² branch: Louvain segments -> segment CLS features -> dataset-level pseudo-labels
# -> dense patch-level pseudo-masks; then the shared refine and evaluate rules.
# The first three steps write under results/datus2/shared/{dataset}/{backbone}/, keyed by
# the parameters they read (the step specs, usseg/methods/datus2/spec.py): a K sweep runs Louvain and the
# segment CLS forward once. The branch's jobs start first among ready jobs (priority 2): theirs
# is the longest chain after the features.
# `snakemake results/datus2/benchmark.md` builds the backbone benchmark over the active
# preset's datus2 experiments.


rule datus2_segments:
    input:
        unpack(shared_inputs("datus2_segments")),
    output:
        directory(PLAN.shared_pattern("datus2_segments")),
    log:
        "results/logs/datus2_segments/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_segments")
    params:
        args=shared_args("datus2_segments"),
    shell:
        "usseg datus2-segments --features {input.features} --out {output} {params.args} 2>&1 | tee {log}"


rule datus2_segment_features:
    input:
        unpack(shared_inputs("datus2_segment_features")),
    output:
        directory(PLAN.shared_pattern("datus2_segment_features")),
    log:
        "results/logs/datus2_segment_features/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_segment_features")
    resources:
        gpu=shared_gpu("datus2_segment_features"),
    params:
        args=shared_args("datus2_segment_features"),
        split=lambda wc: DATASETS[wc.dataset]["split"],
    shell:
        "usseg datus2-segment-features --segments {input.segments} --dataset-dir {input.prepared}"
        " --split {params.split} --backbone {wildcards.backbone} --weights {input.weights}"
        " --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"


rule datus2_pseudolabels:
    input:
        unpack(shared_inputs("datus2_pseudolabels")),
    output:
        directory(PLAN.shared_pattern("datus2_pseudolabels")),
    log:
        "results/logs/datus2_pseudolabels/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_pseudolabels")
    params:
        args=shared_args("datus2_pseudolabels"),
    shell:
        "usseg datus2-pseudolabels --segment-features {input.features} --dataset-dir {input.prepared}"
        " --out {output} {params.args} 2>&1 | tee {log}"


rule datus2_masks:
    input:
        unpack(step_inputs("datus2_masks")),
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
        args=step_args("datus2_masks"),
        split=split_of,
        pictures=lambda wc: experiment(wc)["params"]["tracking"]["pictures"],
    shell:
        "usseg datus2-masks --segments {input.segments} --pseudolabels {input.pseudolabels}"
        " --dataset-dir {input.prepared} --split {params.split} --out {output.scores}"
        " --pictures-dir {output.pictures} --pictures {params.pictures} {params.args} 2>&1 | tee {log}"


rule datus2_benchmark:
    input:
        PLAN.method_evals("datus2"),
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
