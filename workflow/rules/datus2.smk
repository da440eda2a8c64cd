# DatUS² branch: Louvain segments -> segment CLS features -> dataset-level pseudo-labels
# -> dense patch-level pseudo-masks; then the shared refine and evaluate rules.
# `snakemake results/datus2/benchmark.md` builds the backbone benchmark over the active
# preset's datus2 experiments.


rule datus2_segments:
    input:
        features=features_store,
    output:
        directory("results/datus2/{exp}/segments.zarr"),
    log:
        "results/logs/datus2_segments/{exp}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_segments")
    params:
        args=lambda wc: job_args(wc, "datus2"),
    shell:
        "usseg datus2-segments --features {input.features} --out {output} {params.args} 2>&1 | tee {log}"


rule datus2_segment_features:
    input:
        segments="results/datus2/{exp}/segments.zarr",
        prepared=prepared_dir,
        weights=datus2_weights,
    output:
        directory("results/datus2/{exp}/segment_features.zarr"),
    log:
        "results/logs/datus2_segment_features/{exp}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_segment_features")
    resources:
        gpu=lambda wc: experiment_gpu(wc, "datus2"),
    params:
        args=lambda wc: job_args(wc, "datus2"),
        split=datus2_split,
        backbone=lambda wc: experiment(wc)["backbone"],
    shell:
        "usseg datus2-segment-features --segments {input.segments} --dataset-dir {input.prepared}"
        " --split {params.split} --backbone {params.backbone} --weights {input.weights}"
        " --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"


rule datus2_pseudolabels:
    input:
        features="results/datus2/{exp}/segment_features.zarr",
        prepared=prepared_dir,
    output:
        directory("results/datus2/{exp}/pseudolabels.zarr"),
    log:
        "results/logs/datus2_pseudolabels/{exp}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_pseudolabels")
    params:
        args=lambda wc: job_args(wc, "datus2"),
    shell:
        "usseg datus2-pseudolabels --segment-features {input.features} --dataset-dir {input.prepared}"
        " --out {output} {params.args} 2>&1 | tee {log}"


rule datus2_masks:
    input:
        segments="results/datus2/{exp}/segments.zarr",
        pseudolabels="results/datus2/{exp}/pseudolabels.zarr",
        prepared=prepared_dir,
    output:
        scores=directory("results/datus2/{exp}/patch_scores.zarr"),
        pictures=directory("results/datus2/{exp}/pictures"),
    log:
        "results/logs/datus2_masks/{exp}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_masks")
    params:
        args=lambda wc: job_args(wc, "datus2"),
        split=datus2_split,
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
        png="results/datus2/benchmark.png",
    log:
        "results/logs/datus2_benchmark.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("datus2_benchmark")
    shell:
        "usseg datus2-benchmark {input} --out-md {output.md} --out-csv {output.csv} --out-png {output.png}"
        " 2>&1 | tee {log}"
