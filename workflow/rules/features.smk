# Feature cache: one Zarr store per (dataset, backbone), shared by every experiment on it.


def feature_params(wc):
    per_backbone = PARAMS.get("backbones", {}).get(wc.backbone, {})
    cfg = dict(PARAMS["features"])
    if "image_size" in per_backbone:
        cfg["image_size"] = per_backbone["image_size"]
    cfg["split"] = DATASETS[wc.dataset]["split"]
    return cfg


rule features:
    input:
        prepared="data/prepared/{dataset}",
        weights="data/weights/{backbone}.safetensors",
    output:
        directory("results/features/{dataset}/{backbone}.zarr"),
    params:
        args=lambda wc: f"--params {quote_json(feature_params(wc))}",
    threads: workflow.cores
    log:
        "results/logs/features/{dataset}/{backbone}.log",
    shell:
        "usseg features --dataset-dir {input.prepared} --backbone {wildcards.backbone}"
        " --weights {input.weights} --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"
