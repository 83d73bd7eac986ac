# Inference latency and throughput of every trained run (training cost is recorded by train).


rule benchmark:
    input:
        train="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method",
        corpus="results/{study}/corpora/{task}/manifest.json",
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/bench.json",
    params:
        settings=canonical(config["benchmark"]),
        model_path=lambda w: model_path(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        task=lambda w: canonical(config["tasks"][w.task]),
        code=fingerprint("peftlab/bench.py"),
    log:
        "logs/{study}/benchmark/{task}/{method}/{budget}/seed{seed}.log",
    threads: THREADS
    script:
        "../workflow_scripts/benchmark.py"
