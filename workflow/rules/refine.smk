# Shared refine stage: patch-level predictions -> full-resolution label maps (+ dense CRF).
# Refine and evaluate go first among ready jobs (priority), as do the long branches' shared
# steps: a started branch finishes before new ones start, so results come early.


rule refine:
    input:
        scores="results/{method}/{exp}/patch_scores.zarr",
        prepared=prepared_dir,
    output:
        directory("results/{method}/{exp}/refined"),
    log:
        "results/logs/refine/{method}/{exp}.log",
    priority: 1
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("refine")
    resources:
        gpu=lambda wc: PLAN.refine_gpu(wc.exp),
    params:
        args=lambda wc: job_args(wc, "refine"),
        split=split_of,
    shell:
        "usseg refine --scores {input.scores} --dataset-dir {input.prepared} --split {params.split}"
        " --out {output} --threads {threads} {params.args} 2>&1 | tee {log}"
