# Datasets: download and verify raw archives (when the adapter downloads), then prepare.


rule download:
    input:
        lambda wc: PLAN.download_inputs(wc.dataset),
    output:
        directory("data/raw/{dataset}"),
    log:
        "results/logs/download/{dataset}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("download")
    params:
        args=lambda wc: f"--params {quote_json(PLAN.dataset_params(wc.dataset))}",
    shell:
        "usseg download --dataset {wildcards.dataset} --out {output} {params.args} 2>&1 | tee {log}"


rule prepare:
    input:
        unpack(lambda wc: PLAN.prepare_inputs(wc.dataset)),
    output:
        directory("data/prepared/{dataset}"),
    log:
        "results/logs/prepare/{dataset}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("prepare")
    params:
        args=lambda wc: f"--params {quote_json(PLAN.dataset_params(wc.dataset))}",
        raw=lambda wc, input: f"--raw {input.raw}" if "raw" in input.keys() else "",
    shell:
        "usseg prepare --dataset {wildcards.dataset} {params.raw} --out {output} {params.args} 2>&1 | tee {log}"
