# Datasets: download and verify raw archives (when the adapter downloads), then prepare.
from usseg.datasets.registry import adapter


def dataset_params(wc):
    return DATASETS[wc.dataset]


def raw_input(wc):
    cfg = DATASETS[wc.dataset]
    return [f"data/raw/{wc.dataset}"] if adapter(cfg.get("adapter", wc.dataset)).NEEDS_DOWNLOAD else []


rule download:
    output:
        directory("data/raw/{dataset}"),
    params:
        args=lambda wc: f"--params {quote_json(dataset_params(wc))}",
    log:
        "results/logs/download/{dataset}.log",
    shell:
        "usseg download --dataset {wildcards.dataset} --out {output} {params.args} 2>&1 | tee {log}"


rule prepare:
    input:
        raw_input,
    output:
        directory("data/prepared/{dataset}"),
    params:
        args=lambda wc: f"--params {quote_json(dataset_params(wc))}",
        raw=lambda wc, input: f"--raw {input[0]}" if input else "",
    log:
        "results/logs/prepare/{dataset}.log",
    shell:
        "usseg prepare --dataset {wildcards.dataset} {params.raw} --out {output} {params.args} 2>&1 | tee {log}"
