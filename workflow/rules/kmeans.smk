# Baseline branch: k-means over the cached patch features of the whole split.


rule kmeans:
    input:
        features=features_store,
        prepared=prepared_dir,
    output:
        directory("results/kmeans/{exp}/patch_scores.zarr"),
    log:
        "results/logs/kmeans/{exp}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("kmeans")
    params:
        args=step_args("kmeans"),
    shell:
        "usseg kmeans --features {input.features} --dataset-dir {input.prepared}"
        " --out {output} {params.args} 2>&1 | tee {log}"
