# Corpus preparation and tokenized shards. Shards are keyed by (corpus, tokenizer) only, so every
# method, budget and seed of a task reads the same files.


rule prepare_corpus:
    output:
        "results/{study}/corpora/{task}/manifest.json",
    params:
        task=lambda w: canonical(corpus_task(w.task)),
        code=fingerprint("peftlab/data/clean.py", "peftlab/data/l10n.py", "peftlab/data/sources.py"),
    log:
        "logs/{study}/prepare_corpus/{task}.log",
    # Corpora, shards and the tokenizer gate pretrain_base (priority 10), which gates every MT run: without
    # the same priority, ready training jobs of other tasks start first and delay the whole MT branch.
    priority: 10
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/prepare_corpus.py"


rule build_shards:
    input:
        corpus="results/{study}/corpora/{task}/manifest.json",
        base=lambda w: [f"results/{STUDY}/base/{w.model}/tokenizer/tokenizer.json"] if is_built(w.model) else [],
    output:
        "results/{study}/shards/{model}/{task}/manifest.json",
    params:
        task=lambda w: canonical(shard_task(w.task)),
        model_spec=lambda w: canonical(tokenizer_spec(w.model)),
        model_content=lambda w: model_content(w.model),
        built_tokenizer=lambda w: f"results/{STUDY}/base/{w.model}/tokenizer" if is_built(w.model) else None,
        code=fingerprint("peftlab/data/clean.py", "peftlab/data/shards.py", "peftlab/model_source.py",
                         "peftlab/languages.py"),
    log:
        "logs/{study}/build_shards/{model}/{task}.log",
    priority: 10  # as prepare_corpus
    conda:
        "../environment.yml"
    script:
        "../workflow_scripts/build_shards.py"
