import json
from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.models import train_tokenizer  # noqa: E402

sm = snakemake  # noqa: F821


def training_text():
    for manifest in sm.input:
        with open(Path(manifest).parent / "train.jsonl") as handle:
            for line in handle:
                row = json.loads(line)
                yield row["src"]
                yield row["tgt"]


train_tokenizer(training_text(), Path(sm.output[0]).parent, vocab_size=sm.params.vocab_size,
                languages=sm.params.languages)
