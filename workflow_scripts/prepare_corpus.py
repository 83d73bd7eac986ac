from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.data import prepare_corpus  # noqa: E402
from peftlab.status import failure_recorded  # noqa: E402

sm = snakemake  # noqa: F821
manifest = Path(sm.output[0])
with failure_recorded(manifest, {"stage": "prepare_corpus", "task": sm.wildcards.task}, Path(sm.log[0])):
    prepare_corpus(sm.params.task, manifest.parent)
