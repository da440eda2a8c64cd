# Checkpoints: official release files, fetched and verified; backbone weights: converted to a
# timm state dict (safetensors) once per backbone.


rule fetch_checkpoint:
    output:
        "data/checkpoints/{name}.pth",
    log:
        "results/logs/checkpoint/{name}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("fetch_checkpoint")
    params:
        args=lambda wc: f"--params {quote_json(PLAN.checkpoint_params(wc.name))}",
    shell:
        "usseg checkpoint --name {wildcards.name} --out {output} {params.args} 2>&1 | tee {log}"


rule weights:
    input:
        unpack(lambda wc: PLAN.weights_inputs(wc.backbone)),
    output:
        "data/weights/{backbone}.safetensors",
    log:
        "results/logs/weights/{backbone}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("weights")
    params:
        args=lambda wc: f"--params {quote_json(PLAN.backbone_params(wc.backbone))}",
    shell:
        "usseg weights --backbone {wildcards.backbone} --out {output} {params.args} 2>&1 | tee {log}"
