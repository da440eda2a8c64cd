# Context-aware branch (siamese PSG + CAE training, docs/methods/context_aware.md):
# prepared images -> trained network + centroids -> patch_scores.zarr -> shared refine -> evaluate.
# Training reads images, not the feature cache (its views are augmented); prediction gets
# only the keys it reads, so changing the output kind does not retrain.


rule context_aware_train:
    input:
        unpack(context_aware_inputs),
        prepared=prepared_dir,
    output:
        directory("results/context_aware/{exp}/model"),
    log:
        "results/logs/context_aware/{exp}/train.log",
    conda:
        "../envs/usseg.yaml"
    threads: rule_threads("context_aware_train")
    resources:
        gpu=lambda wc: experiment_gpu(wc, "context_aware"),
    params:
        args=lambda wc: context_aware_args(wc, predict=False),
        split=lambda wc: DATASETS[experiment(wc)["dataset"]]["split"],
        vit=context_aware_vit,
    shell:
        "usseg context-aware-train --dataset-dir {input.prepared} --split {params.split} --out {output}"
        " {params.vit} {params.args} 2>&1 | tee {log}"


rule context_aware_predict:
    input:
        unpack(lambda wc: context_aware_inputs(wc, train=False)),
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
        gpu=lambda wc: experiment_gpu(wc, "context_aware"),
    params:
        args=lambda wc: context_aware_args(wc, predict=True),
        split=lambda wc: DATASETS[experiment(wc)["dataset"]]["split"],
        vit=context_aware_vit,
    shell:
        "usseg context-aware-predict --model {input.model} --dataset-dir {input.prepared} --split {params.split}"
        " --out {output} {params.vit} {params.args} 2>&1 | tee {log}"
