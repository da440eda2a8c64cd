# One grid per dataset: the same images across every experiment on it (`usseg grid`),
# for the results page (`snakemake --report report.html`; captions in workflow/report/).


rule grid:
    input:
        unpack(lambda wc: PLAN.grid_inputs(wc.dataset)),
    output:
        report(
            "results/grids/{dataset}.png",
            caption="../report/grid.rst",
            category="Comparison",
            subcategory="grids",
            labels={"figure": "grid", "dataset": "{dataset}"},
        ),
    log:
        "results/logs/grid/{dataset}.log",
    conda:
        "../envs/usseg.yaml"
    params:
        pairs=lambda wc, input: " ".join(
            f"--eval {e} --labels {l}" for e, l in zip(input.evals, input.labels)
        ),
        images=GRID_IMAGES,
    shell:
        "usseg grid --dataset-dir {input.prepared} {params.pairs} --images {params.images}"
        " --out {output} 2>&1 | tee {log}"
