# Backbone weights: converted to a timm state dict (safetensors) once per backbone.


rule weights:
    input:
        unpack(weights_inputs),
    output:
        "data/weights/{backbone}.safetensors",
    log:
        "results/logs/weights/{backbone}.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("weights")
    params:
        args=lambda wc: f"--params {quote_json(backbone_params(wc))}",
    shell:
        "usseg weights --backbone {wildcards.backbone} --out {output} {params.args} 2>&1 | tee {log}"
