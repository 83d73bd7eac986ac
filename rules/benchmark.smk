# Inference latency and throughput of every trained run, each timed beside the base model in one process
# (peftlab/bench.py; training cost is recorded by train).


rule benchmark:
    input:
        train="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method",
        corpus=lambda w: f"results/{w.study}/corpora/{grid.base_name(w.task)}/manifest.json",
        shards=lambda w: shards_of(w.task),
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/bench.json",
    params:
        settings=canonical(config["benchmark"]),
        built_dir=lambda w: built_dir(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        task=lambda w: canonical(task_entry(w.task)),
        # translate.py and data/shards.py: a decoder-only model's prompt batch, as evaluation builds it
        code=fingerprint("peftlab/bench.py", "peftlab/languages.py", "peftlab/translate.py", "peftlab/data/shards.py"),
        torch_threads=THREADS,
    log:
        "logs/{study}/benchmark/{task}/{method}/{budget}/seed{seed}.log",
    resources:
        gpu=GPU_PER_JOB,
    # A benchmark must not share the machine's cores with other jobs (timings beside a training job are
    # its noise, not the method's cost): it asks for every core, like pretrain_base (Snakemake caps a
    # rule's threads at --cores), so a local run starts it only when nothing else runs and starts
    # nothing beside it. It times with params.torch_threads (threads_per_job, as train and evaluate
    # use), not with all of them. On SLURM the profile's set-threads gives it its own allocation.
    threads: 1024
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/benchmark.py"
