# Evaluation: one confusion matrix over the split, both matchings, metrics, pictures; summary.
# The report folder holds the full metrics (eval/metrics.json, read by the summary and the
# datus2 benchmark); results/metrics/ holds DVC's compact metrics (percent, numbers only).


rule evaluate:
    input:
        labels=final_labels,
        prepared=prepared_dir,
    output:
        report=directory("results/{method}/{exp}/eval"),
        metrics="results/metrics/{method}/{exp}.json",
    log:
        "results/logs/evaluate/{method}/{exp}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("evaluate")
    params:
        args=lambda wc: job_args(wc, "evaluate"),
        split=lambda wc: DATASETS[experiment(wc)["dataset"]]["split"],
        pictures=lambda wc: experiment(wc)["params"]["tracking"]["pictures"],
    shell:
        "usseg evaluate --labels {input.labels} --dataset-dir {input.prepared} --split {params.split}"
        " --out {output.report} --metrics {output.metrics} --pictures {params.pictures}"
        " {params.args} 2>&1 | tee {log}"


rule summary:
    input:
        eval_reports(),
    output:
        md="results/summary.md",
        csv="results/summary.csv",
    log:
        "results/logs/summary.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("summary")
    shell:
        "usseg summary --out-md {output.md} --out-csv {output.csv} {input} 2>&1 | tee {log}"
