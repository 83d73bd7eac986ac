# One training job per (task, method, budget, seed). Hyperparameters and the method's own code
# reach the rule through params, so changing either reruns exactly the affected runs. The base
# model and the shards come in as small checksummed manifests (not ancient(), which hides a rebuilt
# input until a second invocation): rebuilding them retrains, touching them does not.
# A method entry with `multitask: true` trains one model per (base model, method, budget, seed)
# on the union of the study's translation tasks (train_multitask); each task's run adopts it.
# A job whose training options set `devices: N` asks for N GPUs and trains data parallel (train_gpus).


rule train:
    input:
        shards=lambda w: [] if shared_training(w) else [shards_of(w.task)],
        base=lambda w: base_model_input(task_model(w.task)),
        shared=shared_training,
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir=directory("results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method"),
    params:
        run=lambda w: canonical(run_spec(w)),
        built_dir=lambda w: built_dir(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        model_content=lambda w: model_content(task_model(w.task)),
        task=lambda w: canonical(task_entry(w.task)),
        checkpoints="results/{study}/checkpoints/{task}/{method}/{budget}/seed{seed}",
        curve="logs/{study}/train/{task}/{method}/{budget}/seed{seed}.jsonl",
        code=train_code,
    log:
        "logs/{study}/train/{task}/{method}/{budget}/seed{seed}.log",
    resources:
        gpu=train_gpus,
    threads: THREADS
    # Training before the evaluations and benchmarks that are ready beside it: the long jobs first, so
    # the short ones fill the cores at the end (the demo's last training started with a minute to go).
    priority: 1
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/train.py"


rule train_multitask:
    input:
        shards=lambda w: [shards_of(t) for t in grid.multitask_tasks(config, w.model, w.method)],
        base=lambda w: base_model_input(w.model),
        shared=[],
    output:
        record="results/{study}/multitask/{model}/{method}/{budget}/seed{seed}/train.json",
        method_dir=directory("results/{study}/multitask/{model}/{method}/{budget}/seed{seed}/method"),
    params:
        run=lambda w: canonical(multitask_spec(w)),
        built_dir=lambda w: built_dir(w.model),
        model_spec=lambda w: canonical(model_spec(w.model)),
        model_content=lambda w: model_content(w.model),
        task=lambda w: canonical(task_entry(grid.multitask_tasks(config, w.model, w.method)[0])),
        checkpoints="results/{study}/checkpoints/multitask/{model}/{method}/{budget}/seed{seed}",
        curve="logs/{study}/train_multitask/{model}/{method}/{budget}/seed{seed}.jsonl",
        code=train_code,
    log:
        "logs/{study}/train_multitask/{model}/{method}/{budget}/seed{seed}.log",
    resources:
        gpu=train_gpus,
    threads: THREADS
    priority: 1  # as train
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/train.py"
