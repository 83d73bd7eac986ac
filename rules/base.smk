# A base model built here: a joint vocabulary, then pretraining on the tagged pretraining pairs.


rule build_tokenizer:
    input:
        vocabulary_corpora,
    output:
        "results/{study}/base/{model}/tokenizer/tokenizer.json",
    params:
        vocab_size=lambda w: model_spec(w.model)["build"]["vocab_size"],
        languages=lambda w: grid.task_languages(config, w.model),
        code=fingerprint("peftlab/models.py"),
    log:
        "logs/{study}/build_tokenizer/{model}.log",
    priority: 10  # it gates pretrain_base, as corpora do (rules/data.smk)
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/build_tokenizer.py"


rule pretrain_base:
    input:
        tokenizer="results/{study}/base/{model}/tokenizer/tokenizer.json",
        shards=lambda w: [shards_of(t) for t in model_spec(w.model)["build"]["pretrain_tasks"]],
        denoise=lambda w: [shards_of(t) for t in model_spec(w.model)["build"].get("denoise_tasks", [])],
    output:
        model=directory("results/{study}/base/{model}/model"),
        manifest="results/{study}/base/{model}/manifest.json",
    params:
        build=lambda w: canonical(model_spec(w.model)["build"]),
        checkpoints="results/{study}/checkpoints/base/{model}",
        code=fingerprint("peftlab/models.py", "peftlab/runs.py", "peftlab/train.py", "peftlab/train_config.py",
                         "peftlab/distributed.py"),
    log:
        "logs/{study}/pretrain_base/{model}.log",
    resources:
        gpu=GPU_PER_JOB,
    # Nothing else can run until the base model exists: ask for every core (Snakemake caps a
    # rule's threads at --cores; the SLURM profile sets its own number).
    threads: 1024
    # It gates every MT run: schedule it before jobs that can wait.
    priority: 10
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/pretrain_base.py"
