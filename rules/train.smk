# One training job per (task, method, budget, seed). Hyperparameters and the method's own code
# reach the rule through params, so changing either reruns exactly the affected runs. The base
# model and shards are ancient(): touching them does not retrain the grid; rebuilding them does.
# A method entry with `multitask: true` trains one model per (base model, method, budget, seed)
# on the union of the study's translation tasks (train_multitask); each task's run adopts it.


def run_spec(w):
    entry = method_entry(w.method)
    return {
        "run_id": f"{w.study}/{w.task}/{w.method}/{w.budget}/seed{w.seed}",
        "study": w.study, "task": w.task, "method": w.method, "method_name": entry["method"],
        "budget": w.budget, "seed": int(w.seed), "options": entry.get("options", {}),
        "train": grid.train_config(config, w.method, w.task), "base_model": task_model(w.task),
        "train_size": grid.train_size(w.task),
        # only where the entry sets one: the default reaches the job through the library, so adding the key
        # to every run would rerun the whole grid for a threshold that changes no computation
        **({"budget_tolerance": entry["budget_tolerance"]} if "budget_tolerance" in entry else {}),
    }


def multitask_spec(w):
    tasks = grid.multitask_tasks(config, w.model, w.method)
    return {**run_spec(SimpleNamespace(**{**vars(w), "task": tasks[0]})), "task": "multitask", "tasks": tasks,
            "run_id": f"{w.study}/multitask/{w.model}/{w.method}/{w.budget}/seed{w.seed}"}


def shared_training(w):
    """The multi-task run a task's run adopts, or nothing for a single-task method."""
    if not method_entry(w.method).get("multitask"):
        return []
    return [f"results/{w.study}/multitask/{task_model(w.task)}/{w.method}/{w.budget}/seed{w.seed}/train.json"]


def train_code(w):
    return fingerprint("peftlab/train.py", "peftlab/train_config.py", "peftlab/runs.py", "peftlab/models.py",
                       "peftlab/model_source.py", *method_code(w.method))


rule train:
    input:
        shards=lambda w: [] if shared_training(w) else [ancient(shards_of(w.task))],
        base=lambda w: [ancient(p) for p in base_model_dir(task_model(w.task))],
        shared=shared_training,
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir=directory("results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method"),
    params:
        run=lambda w: canonical(run_spec(w)),
        built_dir=lambda w: built_dir(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        task=lambda w: canonical(task_entry(w.task)),
        checkpoints="results/{study}/checkpoints/{task}/{method}/{budget}/seed{seed}",
        curve="logs/{study}/train/{task}/{method}/{budget}/seed{seed}.jsonl",
        code=train_code,
    log:
        "logs/{study}/train/{task}/{method}/{budget}/seed{seed}.log",
    threads: THREADS
    script:
        "../workflow_scripts/train.py"


rule train_multitask:
    input:
        shards=lambda w: [ancient(shards_of(t)) for t in grid.multitask_tasks(config, w.model, w.method)],
        base=lambda w: [ancient(p) for p in base_model_dir(w.model)],
        shared=[],
    output:
        record="results/{study}/multitask/{model}/{method}/{budget}/seed{seed}/train.json",
        method_dir=directory("results/{study}/multitask/{model}/{method}/{budget}/seed{seed}/method"),
    params:
        run=lambda w: canonical(multitask_spec(w)),
        built_dir=lambda w: built_dir(w.model),
        model_spec=lambda w: canonical(model_spec(w.model)),
        task=lambda w: canonical(task_entry(grid.multitask_tasks(config, w.model, w.method)[0])),
        checkpoints="results/{study}/checkpoints/multitask/{model}/{method}/{budget}/seed{seed}",
        curve="logs/{study}/train_multitask/{model}/{method}/{budget}/seed{seed}.jsonl",
        code=train_code,
    log:
        "logs/{study}/train_multitask/{model}/{method}/{budget}/seed{seed}.log",
    threads: THREADS
    script:
        "../workflow_scripts/train.py"
