# Spectral branch (Deep Spectral Methods, docs/methods/spectral.md): Laplacian eigenvectors
# -> multi-region segments -> a crop feature per segment (DatUS²'s step) -> k-means over
# the dataset's segments -> patch labels (background 0) -> shared refine and evaluate.
# The first three steps write under results/spectral/shared/{dataset}/{backbone}/, keyed
# by the parameters they read (the step specs, usseg/methods/spectral/spec.py).


rule spectral_segments:
    input:
        unpack(shared_inputs("spectral_segments")),
    output:
        directory(PLAN.shared_pattern("spectral_segments")),
    log:
        "results/logs/spectral_segments/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("spectral_segments")
    params:
        args=shared_args("spectral_segments"),
        split=lambda wc: DATASETS[wc.dataset]["split"],
    shell:
        "usseg spectral-segments --features {input.features} --dataset-dir {input.prepared}"
        " --split {params.split} --out {output} {params.args} 2>&1 | tee {log}"


rule spectral_segment_features:
    input:
        unpack(shared_inputs("spectral_segment_features")),
    output:
        directory(PLAN.shared_pattern("spectral_segment_features")),
    log:
        "results/logs/spectral_segment_features/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("spectral_segment_features")
    resources:
        gpu=shared_gpu("spectral_segment_features"),
    params:
        args=shared_args("spectral_segment_features"),
        split=lambda wc: DATASETS[wc.dataset]["split"],
    shell:
        "usseg datus2-segment-features --segments {input.segments} --dataset-dir {input.prepared}"
        " --split {params.split} --backbone {wildcards.backbone} --weights {input.weights}"
        " --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"


rule spectral_clusters:
    input:
        unpack(shared_inputs("spectral_clusters")),
    output:
        directory(PLAN.shared_pattern("spectral_clusters")),
    log:
        "results/logs/spectral_clusters/{dataset}/{backbone}/{key}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("spectral_clusters")
    params:
        args=shared_args("spectral_clusters"),
    shell:
        "usseg spectral-clusters --segment-features {input.features} --dataset-dir {input.prepared}"
        " --out {output} {params.args} 2>&1 | tee {log}"


rule spectral_masks:
    input:
        unpack(step_inputs("spectral_masks")),
    output:
        directory("results/spectral/{exp}/patch_scores.zarr"),
    log:
        "results/logs/spectral_masks/{exp}.log",
    priority: 2
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("spectral_masks")
    params:
        args=step_args("spectral_masks"),
    shell:
        "usseg spectral-masks --segments {input.segments} --clusters {input.clusters}"
        " --out {output} {params.args} 2>&1 | tee {log}"
