from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.data import prepare_corpus  # noqa: E402

prepare_corpus(snakemake.params.task, Path(snakemake.output[0]).parent)  # noqa: F821
