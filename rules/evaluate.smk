# Test-set translation and sacrebleu scores for every trained run.


rule evaluate:
    input:
        train="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/train.json",
        method_dir="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/method",
        corpus="results/{study}/corpora/{task}/manifest.json",
    output:
        record="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/eval.json",
        hypotheses="results/{study}/runs/{task}/{method}/{budget}/seed{seed}/hyp.test.txt",
    params:
        settings=canonical(config["evaluate"]),
        model_path=lambda w: model_path(task_model(w.task)),
        model_spec=lambda w: canonical(model_spec(task_model(w.task))),
        task=lambda w: canonical(config["tasks"][w.task]),
        code=fingerprint("peftlab/evaluate.py"),
    log:
        "logs/{study}/evaluate/{task}/{method}/{budget}/seed{seed}.log",
    threads: THREADS
    script:
        "../workflow_scripts/evaluate.py"
