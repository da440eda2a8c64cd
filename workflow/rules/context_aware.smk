# Context-aware branch (siamese PSG + CAE training, docs/methods/context_aware.md):
# prepared images -> trained network + centroids -> patch_scores.zarr -> shared refine -> evaluate.
# Training reads images, not the feature cache (its views are augmented); prediction gets
# only the keys it reads, so changing the output kind does not retrain (its step specs:
# usseg/methods/context_aware/spec.py).


rule context_aware_train:
    input:
        unpack(step_inputs("context_aware_train")),
        prepared=prepared_dir,
    output:
        directory("results/context_aware/{exp}/model"),
    log:
        "results/logs/context_aware/{exp}/train.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("context_aware_train")
    resources:
        gpu=step_gpu("context_aware_train"),
    params:
        args=step_args("context_aware_train"),
        split=split_of,
        vit=vit_args,
    shell:
        "usseg context-aware-train --dataset-dir {input.prepared} --split {params.split} --out {output}"
        " {params.vit} {params.args} 2>&1 | tee {log}"


rule context_aware_predict:
    input:
        unpack(step_inputs("context_aware_predict")),
        model="results/context_aware/{exp}/model",
        prepared=prepared_dir,
    output:
        directory("results/context_aware/{exp}/patch_scores.zarr"),
    log:
        "results/logs/context_aware/{exp}/predict.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("context_aware_predict")
    resources:
        gpu=step_gpu("context_aware_predict"),
    params:
        args=step_args("context_aware_predict"),
        split=split_of,
        vit=vit_args,
    shell:
        "usseg context-aware-predict --model {input.model} --dataset-dir {input.prepared} --split {params.split}"
        " --out {output} {params.vit} {params.args} 2>&1 | tee {log}"
