from pathlib import Path

from _setup import start

start(snakemake)  # noqa: F821
from peftlab.runs import pretrain_base  # noqa: E402

sm = snakemake  # noqa: F821
pretrain_base(sm.params.build, Path(sm.input.tokenizer).parent, [Path(s).parent for s in sm.input.shards],
              Path(sm.output[0]), checkpoint_dir=Path(sm.params.checkpoints),
              denoise_dirs=[Path(s).parent for s in sm.input.denoise], log_path=Path(sm.log[0] + ".jsonl"))
