# Inference latency and throughput of every trained run (training cost is recorded by train).


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
        code=fingerprint("peftlab/bench.py", "peftlab/languages.py"),
    log:
        "logs/{study}/benchmark/{task}/{method}/{budget}/seed{seed}.log",
    threads: THREADS
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/benchmark.py"
