# Feature cache: one Zarr store per (dataset, backbone, features settings), shared by every
# experiment whose features agree; the key names image size, facet and a hash of the rest.


rule features:
    input:
        prepared="data/prepared/{dataset}",
        weights="data/weights/{backbone}.safetensors",
    output:
        directory("results/features/{dataset}/{backbone}/{fkey}.zarr"),
    log:
        "results/logs/features/{dataset}/{backbone}/{fkey}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("features")
    resources:
        gpu=int(PARAMS["features"]["device"] != "cpu"),
    params:
        args=lambda wc: f"--params {quote_json(PLAN.feature_params(wc.dataset, wc.backbone, wc.fkey))}",
    shell:
        "usseg features --dataset-dir {input.prepared} --backbone {wildcards.backbone}"
        " --weights {input.weights} --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"
