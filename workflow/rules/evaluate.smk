# Evaluation: one confusion matrix over the split, both matchings, metrics, pictures; summary.
# The report folder holds the full metrics (eval/metrics.json, read by the summary and the
# datus2 benchmark); results/metrics/ holds DVC's compact metrics (percent, numbers only).


rule evaluate:
    input:
        labels=final_labels,
        prepared=prepared_dir,
    output:
        report=report(
            directory("results/{method}/{exp}/eval"),
            patterns=[
                "confusion_{confusion}.png",
                "per_class_iou_{iou}.png",
                "overlays/{image}.png",
            ],
            caption="../report/evaluation.rst",
            category="Experiments",
            subcategory="{exp}",
            labels=report_labels,
        ),
        metrics="results/metrics/{method}/{exp}.json",
    log:
        "results/logs/evaluate/{method}/{exp}.log",
    priority: 1
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("evaluate")
    params:
        args=lambda wc: job_args(wc, "evaluate"),
        split=split_of,
        pictures=lambda wc: experiment(wc)["params"]["tracking"]["pictures"],
        dataset=lambda wc: experiment(wc)["dataset"],  # for the report's captions
        backbone=lambda wc: experiment(wc)["backbone"],
    shell:
        "usseg evaluate --labels {input.labels} --dataset-dir {input.prepared} --split {params.split}"
        " --out {output.report} --metrics {output.metrics} --pictures {params.pictures}"
        " {params.args} 2>&1 | tee {log}"


rule summary:
    input:
        PLAN.per_experiment("eval"),
    output:
        md=report(
            "results/summary.md",
            caption="../report/summary.rst",
            category="Comparison",
            subcategory="summary",
            labels={"figure": "summary table (Markdown)"},
        ),
        csv=report(
            "results/summary.csv",
            caption="../report/summary.rst",
            category="Comparison",
            subcategory="summary",
            labels={"figure": "summary table (CSV)"},
        ),
        # the headline table, shown on the results page's first page (workflow/report/workflow.rst)
        headline="results/summary_headline.csv",
    log:
        "results/logs/summary.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("summary")
    shell:
        "usseg summary --out-md {output.md} --out-csv {output.csv} --out-headline {output.headline}"
        " {input} 2>&1 | tee {log}"
