import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.models import train_tokenizer  # noqa: E402
from peftlab.status import failure_recorded, record_skipped, upstream_failure  # noqa: E402

sm = snakemake  # noqa: F821


def training_text():
    for manifest in sm.input:
        with open(Path(manifest).parent / "train.jsonl") as handle:
            for line in handle:
                row = json.loads(line)  # translation pairs, or a classification task's texts (decoder-only builds)
                yield from (row[k] for k in ("src", "tgt", "text", "text_pair") if row.get(k))


out = Path(sm.output[0])  # tokenizer.json: a failure record in its place has a "status" key, a tokenizer none
identity = {"stage": "build_tokenizer", "model": sm.wildcards.model}
if reason := upstream_failure({manifest: "prepare_corpus" for manifest in sm.input}):
    record_skipped(out, identity, reason)
else:
    with failure_recorded(out, identity, Path(sm.log[0])):
        train_tokenizer(training_text(), out.parent, vocab_size=sm.params.vocab_size,
                        languages=sm.params.languages)
