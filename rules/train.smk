# One training job per (task, method, budget, seed). Hyperparameters and the method's own code
# reach the rule through params, so changing either reruns exactly the affected runs. The base
# model and shards are ancient(): touching them does not retrain the grid; rebuilding them does.


def run_spec(w):
    entry = config["methods"][w.method]
    return {
        "run_id": f"{w.study}/{w.task}/{w.method}/{w.budget}/seed{w.seed}",
        "study": w.study, "task": w.task, "method": w.method, "method_name": entry["method"],
        "budget": w.budget, "seed": int(w.seed), "options": entry.get("options", {}),
        "train": grid.train_config(config, w.method), "base_model": task_model(w.task),
    }


rule train:
    input:
        shards=lambda w: ancient(shards_of(w.task)),
        base=lambda w: [ancient(p) for p in base_model_dir(task_model(w.task))],
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir=directory("results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method"),
    params:
        run=lambda w: canonical(run_spec(w)),
        model_path=lambda w: model_path(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        task=lambda w: canonical(config["tasks"][w.task]),
        checkpoints="results/{study}/checkpoints/{task}/{method}/{budget}/seed{seed}",
        curve="logs/{study}/train/{task}/{method}/{budget}/seed{seed}.jsonl",
        code=lambda w: fingerprint("peftlab/train.py", "peftlab/runs.py", "peftlab/models.py", *method_code(w.method)),
    log:
        "logs/{study}/train/{task}/{method}/{budget}/seed{seed}.log",
    threads: THREADS
    script:
        "../workflow_scripts/train.py"
