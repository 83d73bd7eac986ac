# Test-set scores for every trained run (BLEU/chrF/TER, or accuracy/F1/OOD), and forgetting: CKA
# against the base model, and for a built MT model its quality on its pretraining pairs.


rule evaluate:
    input:
        train="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method",
        corpus=lambda w: f"results/{w.study}/corpora/{grid.base_name(w.task)}/manifest.json",
        shards=lambda w: shards_of(w.task),
        pretraining=lambda w: [f"{d}/manifest.json" for d, _, _ in pretraining_pairs(w).values()],
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/eval.json",
        predictions="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/test.predictions.txt",
    params:
        settings=canonical(config["evaluate"]),
        built_dir=lambda w: built_dir(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        task=lambda w: canonical(task_entry(w.task)),
        pretraining=pretraining_pairs,
        code=fingerprint("peftlab/evaluate.py", "peftlab/classify.py", "peftlab/ood.py", "peftlab/forgetting.py",
                         "peftlab/languages.py", "peftlab/scoring.py", "peftlab/translate.py",
                         "peftlab/data/shards.py"),  # encode_prompts: a decoder-only model's prompts
    log:
        "logs/{study}/evaluate/{task}/{method}/{budget}/seed{seed}.log",
    resources:
        gpu=GPU_PER_JOB,
    threads: THREADS
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/evaluate.py"
