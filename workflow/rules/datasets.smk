# Datasets: download and verify raw archives (when the adapter downloads), then prepare.


rule download:
    input:
        download_inputs,
    output:
        directory("data/raw/{dataset}"),
    log:
        "results/logs/download/{dataset}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("download")
    params:
        args=lambda wc: f"--params {quote_json(dataset_params(wc))}",
    shell:
        "usseg download --dataset {wildcards.dataset} --out {output} {params.args} 2>&1 | tee {log}"


rule prepare:
    input:
        unpack(prepare_inputs),
    output:
        directory("data/prepared/{dataset}"),
    log:
        "results/logs/prepare/{dataset}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("prepare")
    params:
        args=lambda wc: f"--params {quote_json(dataset_params(wc))}",
        raw=lambda wc, input: f"--raw {input.raw}" if "raw" in input.keys() else "",
    shell:
        "usseg prepare --dataset {wildcards.dataset} {params.raw} --out {output} {params.args} 2>&1 | tee {log}"
